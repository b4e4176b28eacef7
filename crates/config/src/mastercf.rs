//! master.cf: one service per logical line, eight fields as in Postfix's master(5):
//! `service type private unpriv chroot wakeup maxproc command [args...]`.

use crate::error::ConfigError;
use crate::lines::logical_lines;
use crate::maincf::split_nameval;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Inet,
    Unix,
    UnixDgram,
    Fifo,
    Pass,
}

impl ServiceType {
    pub fn parse(s: &str) -> Option<ServiceType> {
        Some(match s {
            "inet" => ServiceType::Inet,
            "unix" => ServiceType::Unix,
            "unix-dgram" => ServiceType::UnixDgram,
            "fifo" => ServiceType::Fifo,
            "pass" => ServiceType::Pass,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wakeup timer: every `seconds`; `conditional` (the `?` suffix) means only while the
/// service is in use, as Postfix does for pickup-like services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    pub seconds: u32,
    pub conditional: bool,
}

/// The names of the seven fixed fields, as `postconf -F` prints them.
pub const FIELD_NAMES: [&str; 8] = [
    "service",
    "type",
    "private",
    "unprivileged",
    "chroot",
    "wakeup",
    "process_limit",
    "command",
];

/// One master.cf entry. `fields` keeps the text as written (for `postconf -M/-F`); the typed
/// members are what master acts on. `None` means `-` (the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub kind: ServiceType,
    pub private: Option<bool>,
    pub unprivileged: Option<bool>,
    pub chroot: Option<bool>,
    pub wakeup: Option<Wakeup>,
    pub maxproc: Option<u32>,
    pub command: String,
    /// Arguments after the command, `-o` options excluded, `{ }` groups unwrapped.
    pub args: Vec<String>,
    /// `-o name=value` overrides in order.
    pub overrides: Vec<(String, String)>,
    /// The seven fixed fields as written, then the command with all its arguments.
    pub fields: Vec<String>,
    pub first: usize,
    pub last: usize,
}

impl Service {
    /// `name/type`, the key `postconf -M` and master's logs use.
    pub fn key(&self) -> String {
        format!("{}/{}", self.name, self.kind)
    }

    /// Private defaults to yes; inet services are never private.
    pub fn is_private(&self) -> bool {
        self.kind != ServiceType::Inet && self.private.unwrap_or(true)
    }

    pub fn is_unprivileged(&self) -> bool {
        self.unprivileged.unwrap_or(true)
    }

    /// Postfix 3.0 and later: `-` means no chroot.
    pub fn is_chrooted(&self) -> bool {
        self.chroot.unwrap_or(false)
    }

    /// The process limit, `default` for `-`; 0 means no limit.
    pub fn process_limit(&self, default: u32) -> u32 {
        self.maxproc.unwrap_or(default)
    }

    /// The entry on one line in `postconf -M` layout.
    pub fn format_line(&self) -> String {
        let mut s = columns(&self.fields);
        for a in self.fields.iter().skip(8) {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// For inet services: the host (None = every address of inet_interfaces) and the port
    /// text (a number or an /etc/services name).
    pub fn inet_endpoint(&self) -> Option<(Option<String>, String)> {
        if self.kind != ServiceType::Inet {
            return None;
        }
        Some(split_inet_name(&self.name))
    }
}

/// The eight fields at Postfix's column stops (11, 17, 25, ... ): a field that overflows
/// its column pushes the next one right by one space, and later fields move back to
/// their stops when there is room, as `postconf -M` prints them.
pub fn columns(fields: &[String]) -> String {
    const STOPS: [usize; 7] = [11, 17, 25, 33, 41, 49, 57];
    let mut s = String::new();
    for (i, stop) in STOPS.iter().enumerate() {
        s.push_str(fields.get(i).map_or("-", |f| f.as_str()));
        let len = s.chars().count();
        if len < *stop {
            s.push_str(&" ".repeat(stop - len));
        } else {
            s.push(' ');
        }
    }
    s.push_str(fields.get(7).map_or("", |f| f.as_str()));
    s
}

/// Splits `host:port`, `[v6]:port` or `port`.
pub fn split_inet_name(name: &str) -> (Option<String>, String) {
    if let Some((host, port)) = name.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        return (Some(host.to_string()), port.to_string());
    }
    match name.rsplit_once(':') {
        Some((host, port)) => (Some(host.to_string()), port.to_string()),
        None => (None, name.to_string()),
    }
}

/// Resolves a port number or a TCP service name from /etc/services.
pub fn resolve_port(port: &str) -> Option<u16> {
    if let Ok(n) = port.parse::<u16>() {
        return Some(n);
    }
    let text = std::fs::read_to_string("/etc/services").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(name), Some(pp)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((num, proto)) = pp.split_once('/') else {
            continue;
        };
        if proto == "tcp" && (name == port || words.any(|a| a == port)) {
            return num.parse().ok();
        }
    }
    None
}

#[derive(Debug, Clone, Default)]
pub struct MasterCf {
    pub path: PathBuf,
    pub services: Vec<Service>,
}

/// Splits a command line into words; `{ ... }` is one word (braces kept).
fn split_words(text: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '{' {
            let mut depth = 0usize;
            let mut end = None;
            for (i, ch) in chars.by_ref() {
                if ch == '{' {
                    depth += 1;
                } else if ch == '}' {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
            }
            let end = end.ok_or("missing '}'")?;
            out.push(text[start..=end].to_string());
        } else {
            let mut end = text.len();
            while let Some(&(i, ch)) = chars.peek() {
                if ch.is_whitespace() {
                    end = i;
                    break;
                }
                chars.next();
            }
            out.push(text[start..end].to_string());
        }
    }
    Ok(out)
}

fn ungroup(word: &str) -> &str {
    crate::value::ungroup(word)
}

fn yes_no_dash(s: &str) -> Result<Option<bool>, String> {
    match s {
        "y" => Ok(Some(true)),
        "n" => Ok(Some(false)),
        "-" => Ok(None),
        _ => Err(format!("bad field value \"{s}\": expected y, n or -")),
    }
}

impl MasterCf {
    pub fn parse(path: &Path, text: &str) -> Result<MasterCf, ConfigError> {
        let mut services: Vec<Service> = Vec::new();
        for line in logical_lines(text) {
            let err = |message: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: line.first,
                message,
            };
            let words = split_words(&line.text).map_err(|m| err(m.to_string()))?;
            if words.len() < 8 {
                return Err(err(format!(
                    "entry has {} fields, expected at least 8: \"{}\"",
                    words.len(),
                    line.text
                )));
            }
            let kind = ServiceType::parse(&words[1])
                .ok_or_else(|| err(format!("unknown service type \"{}\"", words[1])))?;
            let private = yes_no_dash(&words[2]).map_err(|m| err(format!("private: {m}")))?;
            let unprivileged =
                yes_no_dash(&words[3]).map_err(|m| err(format!("unprivileged: {m}")))?;
            let chroot = yes_no_dash(&words[4]).map_err(|m| err(format!("chroot: {m}")))?;
            let wakeup = match words[5].as_str() {
                "-" => None,
                w => {
                    let (num, conditional) = match w.strip_suffix('?') {
                        Some(n) => (n, true),
                        None => (w, false),
                    };
                    let seconds = num
                        .parse::<u32>()
                        .map_err(|_| err(format!("bad wakeup time \"{w}\"")))?;
                    (seconds > 0).then_some(Wakeup {
                        seconds,
                        conditional,
                    })
                }
            };
            let maxproc = match words[6].as_str() {
                "-" => None,
                m => Some(
                    m.parse::<u32>()
                        .map_err(|_| err(format!("bad process limit \"{m}\"")))?,
                ),
            };
            let name = words[0].clone();
            if kind == ServiceType::Inet {
                let (_, port) = split_inet_name(&name);
                if port.is_empty() {
                    return Err(err(format!("bad inet service name \"{name}\"")));
                }
            }
            let command = words[7].clone();
            let mut args = Vec::new();
            let mut overrides = Vec::new();
            let mut rest = words[8..].iter();
            while let Some(w) = rest.next() {
                if w == "-o" {
                    let v = rest
                        .next()
                        .ok_or_else(|| err("-o without name=value".to_string()))?;
                    let (n, val) =
                        split_nameval(ungroup(v)).map_err(|m| err(format!("-o {v}: {m}")))?;
                    overrides.push((n.to_string(), val.to_string()));
                } else if let Some(nv) = w.strip_prefix("-o") {
                    let (n, val) = split_nameval(nv).map_err(|m| err(format!("{w}: {m}")))?;
                    overrides.push((n.to_string(), val.to_string()));
                } else {
                    args.push(ungroup(w).to_string());
                }
            }
            if let Some(prev) = services.iter().find(|s| s.name == name && s.kind == kind) {
                return Err(err(format!(
                    "duplicate service {name}/{kind} (first defined at line {})",
                    prev.first
                )));
            }
            services.push(Service {
                name,
                kind,
                private,
                unprivileged,
                chroot,
                wakeup,
                maxproc,
                command,
                args,
                overrides,
                fields: words,
                first: line.first,
                last: line.last,
            });
        }
        Ok(MasterCf {
            path: path.to_path_buf(),
            services,
        })
    }

    pub fn load(path: &Path) -> Result<MasterCf, ConfigError> {
        let text = std::fs::read(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        MasterCf::parse(path, &String::from_utf8_lossy(&text))
    }

    pub fn find(&self, name: &str, kind: ServiceType) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name && s.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<MasterCf, ConfigError> {
        MasterCf::parse(Path::new("master.cf"), t)
    }

    #[test]
    fn fields_and_overrides() {
        let m = parse(
            "# comment\n\
             smtp      inet  n       -       n       -       -       smtpd\n\
             127.0.0.1:2525 inet n - n - 4 smtpd -o smtpd_banner=hi\n\
             \x20 -o { smtpd_client_restrictions = permit_mynetworks, reject } -v\n\
             pickup    unix  n       -       n       60?     1       pickup\n\
             [::1]:10025 inet n - n - - smtpd -osyslog_name=x\n",
        )
        .expect("parses");
        assert_eq!(m.services.len(), 4);
        let s = &m.services[1];
        assert_eq!(s.name, "127.0.0.1:2525");
        assert_eq!(s.maxproc, Some(4));
        assert_eq!(
            s.overrides,
            vec![
                ("smtpd_banner".to_string(), "hi".to_string()),
                (
                    "smtpd_client_restrictions".to_string(),
                    "permit_mynetworks, reject".to_string()
                )
            ]
        );
        assert_eq!(s.args, vec!["-v"]);
        assert_eq!((s.first, s.last), (3, 4));
        assert_eq!(
            s.inet_endpoint(),
            Some((Some("127.0.0.1".into()), "2525".into()))
        );
        let p = &m.services[2];
        assert_eq!(
            p.wakeup,
            Some(Wakeup {
                seconds: 60,
                conditional: true
            })
        );
        assert!(!p.is_private());
        assert!(!m.services[0].is_private());
        assert_eq!(
            m.services[3].inet_endpoint(),
            Some((Some("::1".into()), "10025".into()))
        );
        assert_eq!(m.services[3].overrides[0].0, "syslog_name");
        assert_eq!(
            m.services[0].format_line(),
            "smtp       inet  n       -       n       -       -       smtpd"
        );
        let dgram: Vec<String> = "postlog unix-dgram n - n - 1 postlogd"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(
            columns(&dgram),
            "postlog    unix-dgram n  -       n       -       1       postlogd"
        );
    }

    #[test]
    fn errors_have_lines() {
        let e = parse("\nsmtp inet n - n - - \n").expect_err("short");
        assert!(
            e.to_string().starts_with("master.cf:2: entry has 7 fields"),
            "{e}"
        );
        let e = parse("smtp tcp n - n - - smtpd\n").expect_err("type");
        assert_eq!(e.to_string(), "master.cf:1: unknown service type \"tcp\"");
        let e = parse("smtp inet x - n - - smtpd\n").expect_err("private");
        assert!(e.to_string().contains("private: bad field value"));
        let e = parse("smtp inet n - n - many smtpd\n").expect_err("maxproc");
        assert!(e.to_string().contains("bad process limit"));
        let e = parse("a unix n - n - - x\na unix n - n - - y\n").expect_err("dup");
        assert!(
            e.to_string()
                .starts_with("master.cf:2: duplicate service a/unix")
        );
        let e = parse("a unix n - n - - x -o\n").expect_err("-o");
        assert!(e.to_string().contains("-o without"));
    }

    #[test]
    fn ports() {
        assert_eq!(resolve_port("2525"), Some(2525));
        assert_eq!(resolve_port("smtp"), Some(25));
        assert_eq!(resolve_port("no-such-service-name"), None);
        assert_eq!(split_inet_name("smtp"), (None, "smtp".to_string()));
    }
}

//! `mailctl init DIR`: a ready-to-run configuration and spool for an ordinary user (the
//! README's quick start and the tests): DIR/etc/{main.cf,master.cf}, DIR/spool,
//! DIR/data, DIR/log, with the suite's binaries (the directory of this mailctl) as
//! daemon_directory and high ports on 127.0.0.1. master.cf is the shipped one with the
//! inet services moved to `port_base + offset`.
//!
//! Logins are SQLite virtual users (`auth_passdb = sqlite:DIR/etc/users.db`, managed with
//! `oxipost-user`), unlike the shipped main.cf's system users (`shadow`, which needs
//! root). The demo user `demo@localhost` gets a random password, written to
//! DIR/etc/demo-password (mode 0600), stored as `{SCRAM-SHA-256}` so that every
//! mechanism but CRAM-MD5/APOP works; its mailbox is the Maildir local delivers
//! `demo@localhost` mail to.

use std::path::{Path, PathBuf};

/// The shipped master.cf (repository root).
const SHIPPED_MASTER_CF: &str = include_str!("../../../master.cf");

/// Default port base: smtp 2525, submission 2587, pop3 2110, imap 2143.
pub const DEFAULT_PORT_BASE: u16 = 2000;

/// Offsets from the port base for the shipped inet services.
const PORT_OFFSETS: &[(&str, u16)] = &[
    ("smtp", 525),
    ("submission", 587),
    ("submissions", 465),
    ("pop3", 110),
    ("pop3s", 995),
    ("imap", 143),
    ("imaps", 993),
];

/// The mailbox access services, whose unprivileged column init sets back to `-`.
const MAILBOX_SERVICES: &[&str] = &["pop3", "pop3s", "imap", "imaps"];

/// `line` with its `index`th white-space separated word (from 0) replaced by `value`,
/// the spacing around the words kept.
fn set_column(line: &str, index: usize, value: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = 0;
    let mut in_word = false;
    for c in line.chars() {
        if c.is_whitespace() {
            in_word = false;
            out.push(c);
            continue;
        }
        if !in_word {
            in_word = true;
            if word == index {
                out.push_str(value);
            }
            word += 1;
        }
        if word - 1 != index {
            out.push(c);
        }
    }
    out
}

/// The master.cf of an init'ed directory.
pub fn master_cf(port_base: u16) -> Result<String, String> {
    let mut out = String::new();
    for line in SHIPPED_MASTER_CF.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let starts_entry = !line.starts_with(char::is_whitespace) && !line.starts_with('#');
        match PORT_OFFSETS.iter().find(|(n, _)| *n == name) {
            Some((_, off)) if starts_entry && kind == "inet" => {
                let port = port_base
                    .checked_add(*off)
                    .ok_or_else(|| format!("--port-base {port_base}: port out of range"))?;
                let rest = &line[name.len()..];
                // The shipped pop3/imap services switch to each system user (unprivileged
                // n); an init'ed instance serves virtual users under one uid, many per process.
                let rest = if MAILBOX_SERVICES.contains(&name) {
                    set_column(rest, 2, "-")
                } else {
                    rest.to_owned()
                };
                // Keep the columns aligned when the number is shorter than the name.
                let p = port.to_string();
                let pad = name.len().saturating_sub(p.len());
                out.push_str(&format!("{p}{}{rest}\n", " ".repeat(pad)));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The user and group the instance runs as: the invoking user, or — when root runs
/// `init` — the unprivileged `oxipost` account (workers must never run as root;
/// `scripts/quickstart.sh` and the tests create it).
fn user_and_group() -> (String, String) {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        return ("oxipost".into(), "oxipost".into());
    }
    let gid = nix::unistd::getgid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string());
    (user, group)
}

fn host_name() -> String {
    let h = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    if h.contains('.') {
        h
    } else {
        "localhost.localdomain".into()
    }
}

pub fn main_cf(dir: &Path, bin_dir: &Path) -> String {
    let (user, group) = user_and_group();
    let d = dir.display();
    let b = bin_dir.display();
    format!(
        "# Written by `mailctl init`: an unprivileged oxipost instance in {d}.\n\
         # Start it with: mailctl -c {d}/etc start\n\
         compatibility_level = 3.6\n\
         queue_directory = {d}/spool\n\
         data_directory = {d}/data\n\
         daemon_directory = {b}\n\
         command_directory = {b}\n\
         mail_owner = {user}\n\
         setgid_group = {group}\n\
         inet_interfaces = 127.0.0.1\n\
         inet_protocols = ipv4\n\
         maillog_file = {d}/log/maillog\n\
         myhostname = {host}\n\
         mydestination = $myhostname, localhost\n\
         home_mailbox = Maildir/\n\
         smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n\
         # The demo user: a local recipient without a system account.\n\
         local_users = demo\n\
         local_home_base = {d}/home\n\
         # The instance's own aliases: never the host's /etc/aliases.\n\
         alias_maps = hash:{d}/etc/aliases\n\
         alias_database = hash:{d}/etc/aliases\n\
         # Logins: SQLite virtual users (oxipost-user -c {d}/etc add user@domain).\n\
         auth_passdb = sqlite:{d}/etc/users.db\n",
        host = host_name()
    )
}

/// Writes the files and directories; returns what was written. Existing configuration
/// files are not overwritten.
pub fn init(dir: &Path, port_base: u16) -> Result<Vec<PathBuf>, String> {
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find mailctl itself: {e}"))?;
    let bin_dir = exe
        .parent()
        .ok_or("cannot find the directory of mailctl")?
        .to_path_buf();
    let etc = dir.join("etc");
    let files = [
        (etc.join("main.cf"), main_cf(&dir, &bin_dir)),
        (etc.join("master.cf"), master_cf(port_base)?),
        (etc.join("aliases"), STARTER_ALIASES.to_string()),
    ];
    let made_later = [etc.join("users.db"), etc.join("demo-password")];
    for p in files.iter().map(|(p, _)| p).chain(&made_later) {
        if p.exists() {
            return Err(format!("{} exists; not overwriting it", p.display()));
        }
    }
    let mut written = Vec::new();
    for sub in ["etc", "spool", "data", "log", "home"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        written.push(p);
    }
    for (p, text) in files {
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        written.push(p);
    }
    written.push(build_aliases(&bin_dir, &etc)?);
    written.extend(demo_user(&bin_dir, &dir)?);
    Ok(written)
}

/// The demo user's login (its mail goes to the local user `demo`).
pub const DEMO_LOGIN: &str = "demo@localhost";

/// Creates DIR/etc/users.db with the demo user and DIR/etc/demo-password through the
/// suite's `oxipost-user` (the password goes over standard input, never argv).
fn demo_user(bin_dir: &Path, dir: &Path) -> Result<Vec<PathBuf>, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let db = dir.join("etc").join("users.db");
    let pw_file = dir.join("etc").join("demo-password");
    let password = random_password()?;
    let tool = bin_dir.join("oxipost-user");
    let mut child = std::process::Command::new(&tool)
        .arg("--db")
        .arg(&db)
        .args(["add", DEMO_LOGIN, "--scheme", "SCRAM-SHA-256", "--mailbox"])
        .arg(format!("{}/home/demo/Maildir/", dir.display()))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {}: {e}", tool.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{password}\n").as_bytes())
            .map_err(|e| format!("{}: {e}", tool.display()))?;
    }
    let status = child
        .wait()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    if !status.success() {
        return Err(format!("{} add {DEMO_LOGIN}: {status}", tool.display()));
    }
    // The database holds SCRAM keys (open to an offline guess): the instance's user only.
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", db.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pw_file)
        .map_err(|e| format!("{}: {e}", pw_file.display()))?;
    f.write_all(format!("{password}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", pw_file.display()))?;
    Ok(vec![db, pw_file])
}

/// 16 random letters and digits from the kernel.
fn random_password() -> Result<String, String> {
    use std::io::Read as _;
    const ALNUM: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut raw = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALNUM.len();
    let pw: String = raw
        .iter()
        .filter(|b| usize::from(**b) < limit)
        .take(16)
        .map(|b| char::from(ALNUM[usize::from(*b) % ALNUM.len()]))
        .collect();
    if pw.len() < 16 {
        return Err("/dev/urandom: not enough random bytes".into());
    }
    Ok(pw)
}

/// The aliases(5) file of an init'ed directory.
const STARTER_ALIASES: &str = "\
# aliases(5) of this oxipost instance. After editing, run: newaliases
# (with MAIL_CONFIG set to this directory's etc/), or postalias on this file.
postmaster: demo
MAILER-DAEMON: postmaster
";

/// Builds DIR/etc/aliases.db with the suite's postalias; returns the index path.
fn build_aliases(bin_dir: &Path, etc: &Path) -> Result<PathBuf, String> {
    let postalias = bin_dir.join("postalias");
    let source = etc.join("aliases");
    let status = std::process::Command::new(&postalias)
        .arg("-c")
        .arg(etc)
        .arg(format!("hash:{}", source.display()))
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("run {}: {e}", postalias.display()))?;
    if !status.success() {
        return Err(format!(
            "{} {}: {status}",
            postalias.display(),
            source.display()
        ));
    }
    Ok(etc.join("aliases.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_move_and_entries_parse() {
        let text = master_cf(2000).expect("ok");
        let m = oxipost_config::MasterCf::parse(Path::new("master.cf"), &text).expect("parses");
        let inet: Vec<&str> = m
            .services
            .iter()
            .filter(|s| s.kind == oxipost_config::ServiceType::Inet)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            inet,
            ["2525", "2587", "2465", "2110", "2995", "2143", "2993"]
        );
        assert!(m.find("smtp", oxipost_config::ServiceType::Unix).is_some());
        assert!(master_cf(65000).is_err());
        // Shipped with per-user pop3d/imapd processes; init'ed: many clients as mail_owner.
        assert!(SHIPPED_MASTER_CF.contains("\npop3          inet  n       n"));
        for port in ["2110", "2995", "2143", "2993"] {
            let line = text
                .lines()
                .find(|l| l.starts_with(port))
                .expect("mailbox service");
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols[..5], [port, "inet", "n", "-", "n"], "{line}");
        }
        assert_eq!(set_column(" inet  n  n  n", 2, "-"), " inet  n  -  n");
    }
}

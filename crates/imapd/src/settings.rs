//! Everything imapd takes from main.cf (with master.cf `-o` overrides), resolved once at
//! start into typed values.

use std::path::PathBuf;
use std::time::Duration;

use oxipost_config::Config;

/// imapd's typed configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `imapd_timeout`.
    pub timeout: Duration,
    /// `imapd_login_attempts` (0: no limit).
    pub login_attempts: u32,
    /// `imapd_command_length_limit`.
    pub max_line: usize,
    /// `imapd_literal_size_limit`.
    pub max_literal: u64,
    /// `imapd_client_limit`: clients per process.
    pub max_clients: usize,
    /// `imapd_client_connection_limit` (0: no limit).
    pub max_per_ip: u32,
    /// `imapd_max_userip_connections` (0: no limit).
    pub max_userip: u32,
    /// Where the per user+IP connection slots are locked: `data_directory/imap-connections`.
    pub conn_dir: PathBuf,
    /// `imapd_mail_location` (empty: the user database's).
    pub mail_location: String,
    /// `queue_directory/private/auth`.
    pub auth_socket: PathBuf,
    pub tls: oxipost_daemon::mailtls::MailTls,
    /// Root-run with master.cf unprivileged `n`: one client per process that becomes the
    /// logged-in user before it opens the mailbox; `mail_owner`'s uid and gid, for users the
    /// user database gives no uid (or uid 0). Set by `main`, not a parameter.
    pub per_user: Option<(u32, u32)>,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Result<Settings, String> {
        let err = |n: &str, e: oxipost_config::ConfigError| format!("{n}: {e}");
        let get = |n: &str| cfg.get(n).map_err(|e| err(n, e));
        let int = |n: &str| -> Result<u64, String> {
            let v = cfg.get_int(n).map_err(|e| err(n, e))?;
            u64::try_from(v).map_err(|_| format!("{n}: must not be negative"))
        };
        let tls = oxipost_daemon::mailtls::MailTls::from_config(cfg, "imapd")?;
        Ok(Settings {
            timeout: cfg
                .get_time("imapd_timeout")
                .map_err(|e| err("imapd_timeout", e))?,
            login_attempts: u32::try_from(int("imapd_login_attempts")?).unwrap_or(u32::MAX),
            max_line: usize::try_from(int("imapd_command_length_limit")?)
                .unwrap_or(usize::MAX)
                .max(1024),
            max_literal: int("imapd_literal_size_limit")?.max(1024),
            max_clients: usize::try_from(int("imapd_client_limit")?)
                .unwrap_or(1000)
                .max(1),
            max_per_ip: u32::try_from(int("imapd_client_connection_limit")?).unwrap_or(u32::MAX),
            max_userip: u32::try_from(int("imapd_max_userip_connections")?).unwrap_or(u32::MAX),
            conn_dir: PathBuf::from(get("data_directory")?).join("imap-connections"),
            mail_location: get("imapd_mail_location")?.trim().to_owned(),
            auth_socket: PathBuf::from(get("queue_directory")?).join("private/auth"),
            tls,
            per_user: None,
        })
    }
}

/// The Maildir of a user from a Dovecot-style location (`maildir:~/Maildir`, `%u`).
pub fn maildir_of(spec: &str, user: &str, home: &str) -> Result<PathBuf, String> {
    let spec = if spec.trim().is_empty() {
        "maildir:~/Maildir"
    } else {
        spec.trim()
    };
    let path = match spec.split_once(':') {
        Some((k, rest)) if k.eq_ignore_ascii_case("maildir") => rest,
        Some((k, _)) if k.eq_ignore_ascii_case("mbox") => {
            return Err("mbox mailboxes are not served over IMAP".into());
        }
        _ => spec,
    };
    // Dovecot options after the path (`:INDEX=...`) are not used.
    let path = path.split(':').next().unwrap_or(path);
    let path = path.replace("%u", user);
    let path = match path.strip_prefix('~') {
        Some(rest) if !home.is_empty() => format!("{}{rest}", home.trim_end_matches('/')),
        Some(_) => return Err("the user has no home directory".into()),
        None => path,
    };
    if !path.starts_with('/') {
        return Err(format!("mail location is not absolute: {path}"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::maildir_of;

    #[test]
    fn locations() {
        assert_eq!(
            maildir_of("maildir:~/Maildir", "a", "/h/a"),
            Ok("/h/a/Maildir".into())
        );
        assert_eq!(maildir_of("", "a", "/h/a/"), Ok("/h/a/Maildir".into()));
        assert_eq!(
            maildir_of("/var/mail/%u/Maildir", "b", ""),
            Ok("/var/mail/b/Maildir".into())
        );
        assert!(maildir_of("mbox:~/mbox", "a", "/h").is_err());
        assert!(maildir_of("~/Maildir", "a", "").is_err());
    }
}

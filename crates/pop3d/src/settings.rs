//! Everything pop3d takes from main.cf (with master.cf `-o` overrides), resolved once at
//! start into typed values.

use std::path::PathBuf;
use std::time::Duration;

use oxipost_config::Config;
use oxipost_mailbox::{LockConfig, LockMethod};

/// pop3d's typed configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `pop3d_timeout`.
    pub timeout: Duration,
    /// `pop3d_login_attempts` (0: no limit).
    pub login_attempts: u32,
    /// `pop3d_client_connection_limit` (0: no limit).
    pub client_limit_per_ip: usize,
    /// `pop3d_user_connection_limit` (0: no limit).
    pub user_limit: usize,
    /// `pop3d_command_length_limit`.
    pub max_line: usize,
    /// `pop3d_client_limit`: clients per process.
    pub max_clients: usize,
    /// `pop3d_mail_location` (empty: the user database's).
    pub mail_location: String,
    /// `mail_spool_directory`: an mbox INBOX when the location names a directory.
    pub spool_directory: PathBuf,
    /// `mailbox_delivery_lock` with a single attempt: a busy mbox is `[IN-USE]`, never a
    /// wait that stalls every session of the process.
    pub lock: LockConfig,
    /// `queue_directory/private/auth`.
    pub auth_socket: PathBuf,
    pub tls: oxipost_daemon::mailtls::MailTls,
    /// Started as root (master.cf unprivileged `n`): one client per process, which becomes
    /// the logged-in user before it opens the mailbox; `mail_owner`'s uid and gid, for
    /// users the user database gives no uid (or uid 0). Set by `main`, not a parameter.
    pub per_user: Option<(u32, u32)>,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Result<Settings, String> {
        let err = |n: &str, e: oxipost_config::ConfigError| format!("{n}: {e}");
        let get = |n: &str| cfg.get(n).map_err(|e| err(n, e));
        let int = |n: &str| -> Result<usize, String> {
            let v = cfg.get_int(n).map_err(|e| err(n, e))?;
            usize::try_from(v).map_err(|_| format!("{n}: must not be negative"))
        };
        let queue_directory = PathBuf::from(get("queue_directory")?);
        let methods = LockMethod::parse_list(&get("mailbox_delivery_lock")?)
            .map_err(|e| format!("mailbox_delivery_lock: {e}"))?;
        let lock = LockConfig {
            methods,
            attempts: 1,
            delay: Duration::ZERO,
            stale_time: cfg
                .get_time("stale_lock_time")
                .unwrap_or(Duration::from_secs(500)),
            dotlock_may_fail: true,
        };
        let tls = oxipost_daemon::mailtls::MailTls::from_config(cfg, "pop3d")?;
        Ok(Settings {
            timeout: cfg
                .get_time("pop3d_timeout")
                .map_err(|e| err("pop3d_timeout", e))?,
            login_attempts: u32::try_from(int("pop3d_login_attempts")?).unwrap_or(u32::MAX),
            client_limit_per_ip: int("pop3d_client_connection_limit")?,
            user_limit: int("pop3d_user_connection_limit")?,
            max_line: int("pop3d_command_length_limit")?.max(64),
            max_clients: int("pop3d_client_limit")?.max(1),
            mail_location: get("pop3d_mail_location")?.trim().to_owned(),
            spool_directory: PathBuf::from(get("mail_spool_directory")?),
            lock,
            auth_socket: queue_directory.join("private/auth"),
            tls,
            per_user: None,
        })
    }
}

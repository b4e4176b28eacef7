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
    pub tls: TlsSettings,
    /// Started as root (master.cf unprivileged `n`): one client per process, which becomes
    /// the logged-in user before it opens the mailbox; `mail_owner`'s uid and gid, for
    /// users the user database gives no uid (or uid 0). Set by `main`, not a parameter.
    pub per_user: Option<(u32, u32)>,
}

/// `pop3d_tls_*`, resolved.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// STLS offered (`may`/`encrypt`) or implicit TLS (`pop3d_tls_wrappermode`).
    pub enabled: bool,
    /// `encrypt`: no login before TLS (loopback clients excepted, as Dovecot).
    pub required: bool,
    pub wrapper: bool,
    pub files: oxipost_tls::TlsFiles,
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
        let wrapper = cfg
            .get_bool("pop3d_tls_wrappermode")
            .map_err(|e| err("pop3d_tls_wrappermode", e))?;
        let level = get("pop3d_tls_security_level")?.trim().to_ascii_lowercase();
        let (offered, required) = match level.as_str() {
            "" | "none" => (false, false),
            "may" => (true, false),
            "encrypt" => (true, true),
            other => {
                return Err(format!(
                    "pop3d_tls_security_level: {other:?}: expected none, may or encrypt"
                ));
            }
        };
        let path = |s: String| {
            let s = s.trim().to_owned();
            (!s.is_empty()).then(|| PathBuf::from(s))
        };
        let files = oxipost_tls::TlsFiles {
            cert_file: path(get("pop3d_tls_cert_file")?),
            key_file: path(get("pop3d_tls_key_file")?),
            chain_files: Vec::new(),
            protocols: cfg
                .get_list("pop3d_tls_protocols")
                .map_err(|e| err("pop3d_tls_protocols", e))?
                .join(" "),
        };
        let tls = TlsSettings {
            enabled: offered || wrapper,
            required: required || wrapper,
            wrapper,
            files,
        };
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

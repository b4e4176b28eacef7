//! The typed configuration local(8) works from, read once from main.cf (with master.cf `-o`
//! overrides) at start. Nothing queries the configuration by name after this.

use std::path::PathBuf;
use std::time::Duration;

use oxipost_config::Config;
use oxipost_mailbox::{LockConfig, LockMethod};

/// A recipient listed in `local_users` (the unprivileged embedded default): mail for it is
/// delivered as the user running local, to its home under `local_home_base` unless given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub home: Option<PathBuf>,
}

impl LocalUser {
    /// Parses one `local_users` entry: `name` or `name:/home/dir`. Names are lowercased, as
    /// recipients are.
    pub fn parse(entry: &str) -> Option<LocalUser> {
        let (name, home) = match entry.split_once(':') {
            Some((n, h)) if !h.is_empty() => (n, Some(PathBuf::from(h))),
            Some((n, _)) => (n, None),
            None => (entry, None),
        };
        let name = name.trim().to_lowercase();
        (!name.is_empty() && !name.contains('/')).then_some(LocalUser { name, home })
    }
}

/// Everything local(8) needs from main.cf.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `mydestination`, expanded and lowercased; lookup-table entries are skipped.
    pub mydestination: Vec<String>,
    /// `recipient_delimiter`: any of these characters starts an address extension.
    pub recipient_delimiter: String,
    pub owner_request_special: bool,
    pub double_bounce_sender: String,
    pub local_users: Vec<LocalUser>,
    pub local_home_base: PathBuf,
    /// `home_mailbox`: `Maildir/` (trailing slash: Maildir), a file name (mbox), or empty
    /// (mbox in `mail_spool_directory`).
    pub home_mailbox: String,
    pub mail_spool_directory: PathBuf,
    /// `mailbox_command`, unexpanded: Postfix does not apply `$name` expansion to it.
    pub mailbox_command: String,
    pub command_time_limit: Duration,
    /// 0 = no limit.
    pub mailbox_size_limit: u64,
    /// 0 = no limit.
    pub message_size_limit: u64,
    pub lock: LockConfig,
    pub export_environment: Vec<String>,
    /// The user commands run as when the recipient is root.
    pub default_privs: String,
    /// `prepend_delivered_header` contains `command`.
    pub delivered_to_command: bool,
    /// How much of the message header is read for the `Delivered-To:` loop check.
    pub header_size_limit: u64,
    /// `prepend_delivered_header` contains `file`.
    pub delivered_to_file: bool,
    /// `prepend_delivered_header` contains `forward`.
    pub delivered_to_forward: bool,
    /// `allow_mail_to_commands`: the expansion classes (`alias`, `forward`, `include`)
    /// whose `|command` entries are delivered.
    pub allow_mail_to_commands: Vec<String>,
    /// `allow_mail_to_files`: the same for `/file` entries.
    pub allow_mail_to_files: Vec<String>,
    /// `forward_path`, unexpanded: its `$home`, `$user`, ... are the recipient's.
    pub forward_path: String,
    /// `myorigin`: the domain of `owner-` senders.
    pub myorigin: String,
    pub expand_owner_alias: bool,
    /// `mail_owner`: forwarded mail is queued with its rights.
    pub mail_owner: String,
    /// The queue forwarded mail is written to.
    pub queue: oxipost_queue::QueueConfig,
    /// The tables of `alias_maps`, opened on first use.
    pub aliases: std::sync::Arc<crate::aliasdb::AliasDb>,
}

impl Settings {
    /// Reads and checks the parameters; an error names the parameter.
    pub fn from_config(cfg: &Config) -> Result<Settings, String> {
        let get = |n: &str| cfg.get(n).map_err(|e| e.to_string());
        let list = |n: &str| cfg.get_list(n).map_err(|e| e.to_string());
        let size = |n: &str| cfg.get_size(n).map_err(|e| e.to_string());
        let time = |n: &str| cfg.get_time(n).map_err(|e| e.to_string());
        let mydestination = list("mydestination")?
            .into_iter()
            .filter(|d| {
                let table = d.contains(':') || d.starts_with('/');
                if table {
                    oxipost_log::warning!(
                        "mydestination: lookup table {d} is not supported yet; ignored"
                    );
                }
                !table
            })
            .map(|d| d.trim_end_matches('.').to_lowercase())
            .collect();
        let local_users = list("local_users")?
            .iter()
            .filter_map(|e| {
                let u = LocalUser::parse(e);
                if u.is_none() {
                    oxipost_log::warning!("local_users: ignoring bad entry {e:?}");
                }
                u
            })
            .collect();
        let lower = |n: &str| -> Result<Vec<String>, String> {
            Ok(list(n)?.into_iter().map(|w| w.to_lowercase()).collect())
        };
        let delivered = list("prepend_delivered_header")?;
        let methods = LockMethod::parse_list(&get("mailbox_delivery_lock")?)
            .map_err(|e| format!("mailbox_delivery_lock: {e}"))?;
        let attempts = cfg
            .get_int("deliver_lock_attempts")
            .map_err(|e| e.to_string())?;
        let lock = LockConfig {
            methods,
            attempts: u32::try_from(attempts.max(1)).unwrap_or(u32::MAX),
            delay: time("deliver_lock_delay")?,
            stale_time: time("stale_lock_time")?,
            dotlock_may_fail: false,
        };
        Ok(Settings {
            mydestination,
            recipient_delimiter: get("recipient_delimiter")?,
            owner_request_special: cfg
                .get_bool("owner_request_special")
                .map_err(|e| e.to_string())?,
            double_bounce_sender: get("double_bounce_sender")?,
            local_users,
            local_home_base: PathBuf::from(get("local_home_base")?),
            home_mailbox: get("home_mailbox")?,
            mail_spool_directory: PathBuf::from(get("mail_spool_directory")?),
            mailbox_command: cfg.raw("mailbox_command").unwrap_or_default(),
            command_time_limit: time("command_time_limit")?,
            mailbox_size_limit: size("mailbox_size_limit")?,
            message_size_limit: size("message_size_limit")?,
            lock,
            export_environment: list("export_environment")?,
            default_privs: get("default_privs")?,
            delivered_to_command: delivered.iter().any(|w| w.eq_ignore_ascii_case("command")),
            header_size_limit: size("header_size_limit")?.max(1024),
            delivered_to_file: delivered.iter().any(|w| w.eq_ignore_ascii_case("file")),
            delivered_to_forward: delivered.iter().any(|w| w.eq_ignore_ascii_case("forward")),
            aliases: std::sync::Arc::new(crate::aliasdb::AliasDb::new(&get("alias_maps")?)),
            allow_mail_to_commands: lower("allow_mail_to_commands")?,
            allow_mail_to_files: lower("allow_mail_to_files")?,
            forward_path: cfg.raw("forward_path").unwrap_or_default(),
            myorigin: get("myorigin")?.to_lowercase(),
            expand_owner_alias: cfg
                .get_bool("expand_owner_alias")
                .map_err(|e| e.to_string())?,
            mail_owner: get("mail_owner")?,
            queue: oxipost_queue::QueueConfig::new(get("queue_directory")?)
                .with_hash_queue_names(&get("hash_queue_names")?)
                .with_hash_queue_depth(
                    u32::try_from(
                        cfg.get_int("hash_queue_depth")
                            .map_err(|e| e.to_string())?
                            .clamp(1, 16),
                    )
                    .unwrap_or(1),
                ),
        })
    }

    /// True when `class` (`alias`, `forward`, `include`) may deliver to commands.
    pub fn commands_allowed(&self, class: &str) -> bool {
        self.allow_mail_to_commands.iter().any(|c| c == class)
    }

    /// True when `class` may deliver to files.
    pub fn files_allowed(&self, class: &str) -> bool {
        self.allow_mail_to_files.iter().any(|c| c == class)
    }

    /// True when `domain` (any case, trailing dot allowed) is one of `mydestination`.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_lowercase();
        self.mydestination.contains(&d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_config::MainCf;
    use std::path::Path;

    fn settings(text: &str) -> Settings {
        let main = MainCf::parse(Path::new("main.cf"), text).expect("parses");
        let cfg = Config::from_main(Path::new("/etc/oxipost"), main, false);
        Settings::from_config(&cfg).expect("settings")
    }

    #[test]
    fn local_users_entries() {
        assert_eq!(
            LocalUser::parse("Alice"),
            Some(LocalUser {
                name: "alice".into(),
                home: None
            })
        );
        assert_eq!(
            LocalUser::parse("bob:/srv/bob"),
            Some(LocalUser {
                name: "bob".into(),
                home: Some(PathBuf::from("/srv/bob"))
            })
        );
        assert_eq!(LocalUser::parse(":/x"), None);
        assert_eq!(LocalUser::parse("a/b"), None);
    }

    #[test]
    fn reads_typed_values_and_keeps_mailbox_command_raw() {
        let s = settings(
            "myhostname = mx.example.org\nmydestination = $myhostname, Example.ORG\n\
             local_users = alice, bob:/srv/bob\nmailbox_command = /bin/x \"$EXTENSION\"\n\
             mailbox_size_limit = 1000\n",
        );
        assert!(s.is_local_domain("MX.example.org."));
        assert!(s.is_local_domain("example.org"));
        assert!(!s.is_local_domain("other.org"));
        assert_eq!(s.local_users.len(), 2);
        assert_eq!(s.mailbox_command, "/bin/x \"$EXTENSION\"");
        assert_eq!(s.mailbox_size_limit, 1000);
        assert!(s.delivered_to_command);
        assert_eq!(s.lock.methods, vec![LockMethod::Fcntl, LockMethod::Dotlock]);
    }
}

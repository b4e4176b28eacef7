//! The typed configuration virtual(8) works from, read once at start (main.cf with
//! master.cf `-o` overrides), with its lookup tables open. Nothing queries the
//! configuration by name after this.

use std::path::PathBuf;
use std::time::Duration;

use oxipost_config::Config;
use oxipost_mailbox::{LockConfig, LockMethod};
use oxipost_maps::{MapConfig, Maps};

/// Everything virtual(8) needs from main.cf.
#[derive(Debug)]
pub struct Settings {
    /// `virtual_mailbox_maps`: recipient → mailbox path under the base.
    pub mailbox_maps: Maps,
    /// `virtual_mailbox_base`: the prefix of every mailbox path.
    pub mailbox_base: PathBuf,
    /// `virtual_uid_maps`, `virtual_gid_maps`.
    pub uid_maps: Maps,
    pub gid_maps: Maps,
    /// `virtual_minimum_uid`.
    pub minimum_uid: u32,
    /// `virtual_mailbox_limit` (0: none): the largest mbox file, or Maildir message file.
    pub mailbox_limit: u64,
    /// `message_size_limit` (0: none).
    pub message_size_limit: u64,
    /// `virtual_mailbox_lock` with `deliver_lock_*` and `stale_lock_time`.
    pub lock: LockConfig,
    /// `recipient_delimiter`.
    pub recipient_delimiter: String,
    /// How much of the message header is read for the `Delivered-To:` loop check.
    pub header_size_limit: u64,
}

fn err(name: &str, e: impl std::fmt::Display) -> String {
    format!("parameter {name}: {e}")
}

impl Settings {
    /// Reads and checks the parameters and opens the tables; an error names the parameter.
    pub fn from_config(cfg: &Config) -> Result<Settings, String> {
        let get = |n: &str| cfg.get(n).map_err(|e| err(n, e));
        let size = |n: &str| cfg.get_size(n).map_err(|e| err(n, e));
        let time = |n: &str| cfg.get_time(n).map_err(|e| err(n, e));
        let mc = MapConfig::default();
        let maps = |n: &str| Maps::open(&get(n)?, &mc).map_err(|e| err(n, e.message));
        let methods = LockMethod::parse_list(&get("virtual_mailbox_lock")?)
            .map_err(|e| err("virtual_mailbox_lock", e))?;
        let attempts = cfg
            .get_int("deliver_lock_attempts")
            .map_err(|e| err("deliver_lock_attempts", e))?;
        let minimum_uid = cfg
            .get_int("virtual_minimum_uid")
            .map_err(|e| err("virtual_minimum_uid", e))?;
        Ok(Settings {
            mailbox_maps: maps("virtual_mailbox_maps")?,
            mailbox_base: PathBuf::from(get("virtual_mailbox_base")?.trim()),
            uid_maps: maps("virtual_uid_maps")?,
            gid_maps: maps("virtual_gid_maps")?,
            minimum_uid: u32::try_from(minimum_uid.max(0)).unwrap_or(u32::MAX),
            mailbox_limit: size("virtual_mailbox_limit")?,
            message_size_limit: size("message_size_limit")?,
            lock: LockConfig {
                methods,
                attempts: u32::try_from(attempts.max(1)).unwrap_or(u32::MAX),
                delay: time("deliver_lock_delay")?.max(Duration::from_millis(10)),
                stale_time: time("stale_lock_time")?,
                dotlock_may_fail: false,
            },
            recipient_delimiter: get("recipient_delimiter")?.trim().to_string(),
            header_size_limit: size("header_size_limit")?.max(1024),
        })
    }

    /// Warnings about skipped table lines, logged once at start.
    pub fn warnings(&self) -> Vec<String> {
        [&self.mailbox_maps, &self.uid_maps, &self.gid_maps]
            .iter()
            .flat_map(|m| m.warnings())
            .collect()
    }
}

//! qmgr's typed settings, read once at start from main.cf and master.cf.

use oxipost_cleanup::AddressClasses;
use oxipost_config::{Config, MasterCf, ServiceType};
use oxipost_maps::{MapConfig, Maps};
use oxipost_queue::{Layout, QueueConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// How many deliveries through this transport at once (master.cf maxproc).
    pub process_limit: usize,
    /// Parallel deliveries to one destination.
    pub destination_concurrency: usize,
    /// Recipients per delivery request.
    pub destination_recipients: usize,
    /// `initial_destination_concurrency`: the window a destination starts with.
    pub initial_concurrency: usize,
    /// Pseudo-cohorts of failed connections before a destination is dead (0: never).
    pub failed_cohort_limit: u32,
    pub positive_feedback: Feedback,
    pub negative_feedback: Feedback,
    /// `destination_rate_delay`: spacing between deliveries to one destination.
    pub rate_delay: Duration,
    /// The agent (smtp, lmtp) reports a destination that cannot be reached by deferring
    /// every recipient with `relay=none`: that is negative feedback, not a recipient's
    /// answer. Other agents defer with `relay=none` for reasons of their own.
    pub site_feedback: bool,
}

/// Concurrency feedback: a fixed amount, or `N/concurrency` (divided by the window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    Fixed(f64),
    PerWindow(f64),
}

impl Feedback {
    /// Postfix's syntax: `1`, `0.5`, `1/concurrency`, `1/8`.
    pub fn parse(v: &str) -> Option<Feedback> {
        let v = v.trim();
        let num = |t: &str| {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
        };
        match v.split_once('/') {
            None => num(v).map(Feedback::Fixed),
            Some((n, d)) if d.trim().eq_ignore_ascii_case("concurrency") => {
                num(n).map(Feedback::PerWindow)
            }
            Some((n, d)) => {
                let d = num(d).filter(|d| *d > 0.0)?;
                num(n).map(|n| Feedback::Fixed(n / d))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub layout: Layout,
    pub private_dir: PathBuf,
    pub myhostname: String,
    /// The address classes (local, virtual alias, virtual mailbox, relay) with their tables.
    pub classes: Arc<AddressClasses>,
    /// `transport_maps`, open.
    pub transport_maps: Arc<Maps>,
    /// `parent_domain_matches_subdomains` names `transport_maps`.
    pub transport_parent_matches: bool,
    /// `recipient_delimiter`, for the transport_maps key without extension.
    pub recipient_delimiter: String,
    pub local_transport: String,
    pub virtual_transport: String,
    pub relay_transport: String,
    pub default_transport: String,
    pub relayhost: String,
    pub queue_run_delay: Duration,
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub maximal_queue_lifetime: Duration,
    pub bounce_queue_lifetime: Duration,
    pub active_limit: usize,
    pub bounce_size_limit: u64,
    pub mail_name: String,
    pub ipc_timeout: Duration,
    pub transport_retry_time: Duration,
    pub transports: HashMap<String, TransportLimits>,
    /// What notifications go where (see [`crate::notify`]).
    pub notify: crate::notify::NotifySettings,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Result<Settings, String> {
        let e = |e: oxipost_config::ConfigError| e.to_string();
        let queue_directory = cfg.get("queue_directory").map_err(e)?;
        let qc = QueueConfig::new(&queue_directory)
            .with_hash_queue_names(&cfg.get("hash_queue_names").map_err(e)?)
            .with_hash_queue_depth(cfg.get_int("hash_queue_depth").map_err(e)?.clamp(1, 16) as u32);
        let layout = Layout::new(qc).map_err(|err| err.to_string())?;
        let default_limit = cfg.get_int("default_process_limit").map_err(e)?.max(1) as usize;
        let mut transports = HashMap::new();
        let master = MasterCf::load(&cfg.config_dir.join("master.cf")).map_err(e)?;
        for s in master
            .services
            .iter()
            .filter(|s| s.kind == ServiceType::Unix)
        {
            let limit = match s.process_limit(default_limit as u32) {
                0 => 1000,
                n => n as usize,
            };
            let get = |suffix: &str, fallback: &str| -> usize {
                let name = format!("{}_{}", s.name, suffix);
                let v = if cfg.is_known(&name) {
                    cfg.get_int(&name)
                } else {
                    cfg.get_int(fallback)
                };
                v.unwrap_or(1).max(1) as usize
            };
            // The per-transport name when main.cf or the table knows it, else the default.
            let pick = |suffix: &str, fallback: &str| -> String {
                let name = format!("{}_{}", s.name, suffix);
                if cfg.raw(&name).is_some() {
                    name
                } else {
                    fallback.to_string()
                }
            };
            let feedback = |suffix: &str| -> Result<Feedback, String> {
                let n = pick(suffix, &format!("default_{suffix}"));
                let v = cfg.get(&n).map_err(e)?;
                Feedback::parse(&v).ok_or_else(|| format!("{n}: bad feedback value {v}"))
            };
            let program = s.command.rsplit('/').next().unwrap_or("");
            transports.insert(
                s.name.clone(),
                TransportLimits {
                    process_limit: limit,
                    destination_concurrency: get(
                        "destination_concurrency_limit",
                        "default_destination_concurrency_limit",
                    ),
                    destination_recipients: get(
                        "destination_recipient_limit",
                        "default_destination_recipient_limit",
                    ),
                    initial_concurrency: get(
                        "initial_destination_concurrency",
                        "initial_destination_concurrency",
                    ),
                    failed_cohort_limit: cfg
                        .get_int(&pick(
                            "destination_concurrency_failed_cohort_limit",
                            "default_destination_concurrency_failed_cohort_limit",
                        ))
                        .map_err(e)?
                        .clamp(0, u32::MAX as i64) as u32,
                    positive_feedback: feedback("destination_concurrency_positive_feedback")?,
                    negative_feedback: feedback("destination_concurrency_negative_feedback")?,
                    rate_delay: cfg
                        .get_time(&pick(
                            "destination_rate_delay",
                            "default_destination_rate_delay",
                        ))
                        .map_err(e)?,
                    site_feedback: matches!(program, "smtp" | "lmtp"),
                },
            );
        }
        let transport_maps = Maps::open(
            &cfg.get("transport_maps").map_err(e)?,
            &MapConfig::default(),
        )
        .map_err(|err| format!("parameter transport_maps: {}", err.message))?;
        for w in transport_maps.warnings() {
            oxipost_log::warning!("{w}");
        }
        Ok(Settings {
            classes: Arc::new(AddressClasses::from_config(cfg)?),
            transport_maps: Arc::new(transport_maps),
            transport_parent_matches: cfg
                .get_list("parent_domain_matches_subdomains")
                .map_err(e)?
                .iter()
                .any(|p| p.eq_ignore_ascii_case("transport_maps")),
            recipient_delimiter: cfg.get("recipient_delimiter").map_err(e)?,
            private_dir: PathBuf::from(&queue_directory).join("private"),
            layout,
            myhostname: cfg.get("myhostname").map_err(e)?.to_ascii_lowercase(),
            local_transport: cfg.get("local_transport").map_err(e)?,
            virtual_transport: cfg.get("virtual_transport").map_err(e)?,
            relay_transport: cfg.get("relay_transport").map_err(e)?,
            default_transport: cfg.get("default_transport").map_err(e)?,
            relayhost: cfg.get("relayhost").map_err(e)?,
            queue_run_delay: cfg.get_time("queue_run_delay").map_err(e)?,
            minimal_backoff: cfg.get_time("minimal_backoff_time").map_err(e)?,
            maximal_backoff: cfg.get_time("maximal_backoff_time").map_err(e)?,
            maximal_queue_lifetime: cfg.get_time("maximal_queue_lifetime").map_err(e)?,
            bounce_queue_lifetime: cfg.get_time("bounce_queue_lifetime").map_err(e)?,
            active_limit: cfg.get_int("qmgr_message_active_limit").map_err(e)?.max(1) as usize,
            bounce_size_limit: cfg.get_size("bounce_size_limit").map_err(e)?,
            mail_name: cfg.get("mail_name").map_err(e)?,
            ipc_timeout: cfg.get_time("ipc_timeout").map_err(e)?,
            transport_retry_time: cfg.get_time("transport_retry_time").map_err(e)?,
            transports,
            notify: crate::notify::NotifySettings::from_config(cfg)?,
        })
    }

    /// Limits of a transport; one not in master.cf gets conservative defaults (its
    /// deliveries will fail with "transport unavailable" anyway).
    pub fn limits(&self, transport: &str) -> TransportLimits {
        self.transports
            .get(transport)
            .cloned()
            .unwrap_or(TransportLimits {
                process_limit: 1,
                destination_concurrency: 1,
                destination_recipients: 1,
                initial_concurrency: 1,
                failed_cohort_limit: 1,
                positive_feedback: Feedback::Fixed(1.0),
                negative_feedback: Feedback::Fixed(1.0),
                rate_delay: Duration::ZERO,
                site_feedback: false,
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn feedback_syntax() {
        assert_eq!(Feedback::parse("1"), Some(Feedback::Fixed(1.0)));
        assert_eq!(
            Feedback::parse("1/concurrency"),
            Some(Feedback::PerWindow(1.0))
        );
        assert_eq!(Feedback::parse("1/4"), Some(Feedback::Fixed(0.25)));
        assert_eq!(Feedback::parse("x"), None);
        assert_eq!(Feedback::parse("1/0"), None);
    }

    /// Settings from a main.cf text, with an empty master.cf.
    pub fn settings(text: &str) -> Settings {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("master.cf"), "").expect("master.cf");
        let main = oxipost_config::MainCf::parse(
            &dir.path().join("main.cf"),
            &format!("queue_directory = {}\n{text}", dir.path().display()),
        )
        .expect("main.cf");
        let cfg = Config::from_main(dir.path(), main, true);
        Settings::from_config(&cfg).expect("settings")
    }
}

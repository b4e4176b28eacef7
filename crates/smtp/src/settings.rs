//! The agent's configuration, read once at start into typed values. In LMTP mode every
//! `smtp_*` parameter is read as `lmtp_*` when main.cf (or the table) has that name, as
//! Postfix's lmtp(8) does, and falls back to the `smtp_*` value otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use oxipost_config::Config;
use oxipost_maps::{MapConfig, Maps};

use crate::tls::TlsLevel;

/// Per-stage time limits (Postfix's `smtp_*_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub helo: Duration,
    pub starttls: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    pub data_xfer: Duration,
    pub data_done: Duration,
    pub quit: Duration,
}

/// Which address families to use (`inet_protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    /// Whether `ip` may be used.
    pub fn allows(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }
}

/// Everything the agent reads from main.cf.
pub struct Settings {
    /// LMTP mode (`LHLO`, one reply per recipient after the content, port 24).
    pub lmtp: bool,
    /// `smtp` or `lmtp`: the parameter prefix and the log's service name.
    pub prefix: &'static str,
    pub helo_name: String,
    pub timeouts: Timeouts,
    pub bind4: Option<Ipv4Addr>,
    pub bind6: Option<Ipv6Addr>,
    pub families: Families,
    pub tls_level: TlsLevel,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_ca_path: Option<PathBuf>,
    pub tls_policy_maps: Option<Maps>,
    pub tls_verify_cert_match: Vec<String>,
    pub tls_secure_cert_match: Vec<String>,
    pub sasl_enable: bool,
    pub sasl_password_maps: Option<Maps>,
    pub sasl_security_options: Vec<String>,
    pub sasl_tls_security_options: Vec<String>,
    pub sasl_mechanism_filter: Vec<String>,
    pub sasl_soft_bounce: bool,
    pub skip_5xx_greeting: bool,
    pub cache_time_limit: Duration,
    /// `smtp_connection_reuse_time_limit`: a session older than this is not reused.
    pub reuse_time_limit: Duration,
    /// `smtp_connection_cache_on_demand`: keep sessions for reuse (a batch from qmgr is
    /// the backlog that makes it pay).
    pub cache_on_demand: bool,
    /// `smtp_connection_cache_destinations`: next hops whose sessions are kept even
    /// when on-demand caching is off (lower case, as written: `[host]:port`, domain).
    pub cache_destinations: Vec<String>,
    pub mx_address_limit: usize,
    pub mx_session_limit: usize,
    pub discard_ehlo_keywords: Vec<String>,
    /// `smtp_host_lookup`: `dns`, `native`, or both in order.
    pub host_lookup: Vec<String>,
    /// `oxipost_dns_servers`: empty means `/etc/resolv.conf`.
    pub dns_servers: String,
    /// `smtp_generic_maps` (`lmtp_generic_maps` in LMTP mode, no fallback: Postfix
    /// keeps them apart).
    pub generic: Option<crate::generic::Generic>,
    /// `myhostname`: a server that answers EHLO with it is this host (a mail loop).
    pub myhostname: String,
    /// `relayhost` as written: a hard error for it is a configuration problem (4.3.5).
    pub relayhost: String,
    /// `inet_interfaces` and `proxy_interfaces`, for MX loop detection.
    pub own: crate::dest::OwnAddrs,
    /// Ports where loop detection applies: 25 (Postfix checks only the SMTP port, so
    /// that a content filter on localhost:10025 is not a loop) and the ports of this
    /// system's own smtpd services in master.cf.
    pub loop_ports: Vec<u16>,
    /// `smtp_fallback_relay` (SMTP only; Postfix's lmtp has none).
    pub fallback_relay: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Settings {
    /// Reads the settings; `lmtp` selects the `lmtp_*` names.
    pub fn from_config(cfg: &Config, lmtp: bool) -> Result<Settings, String> {
        let prefix = if lmtp { "lmtp" } else { "smtp" };
        // The name to read for a `smtp_` suffix: `lmtp_x` when it exists.
        let name = |suffix: &str| -> String {
            if lmtp {
                let l = format!("lmtp_{suffix}");
                if cfg.raw(&l).is_some() {
                    return l;
                }
            }
            format!("smtp_{suffix}")
        };
        let get = |s: &str| cfg.get(&name(s)).map_err(err);
        let time = |s: &str, dflt: u64| -> Result<Duration, String> {
            let n = name(s);
            if cfg.raw(&n).is_none() {
                return Ok(Duration::from_secs(dflt));
            }
            cfg.get_time(&n).map_err(err)
        };
        let boolean = |s: &str, dflt: bool| -> Result<bool, String> {
            let n = name(s);
            if cfg.raw(&n).is_none() {
                return Ok(dflt);
            }
            cfg.get_bool(&n).map_err(err)
        };
        let list = |s: &str| -> Result<Vec<String>, String> {
            Ok(split(&get(s)?)
                .into_iter()
                .map(|w| w.to_ascii_lowercase())
                .collect())
        };
        let maps = |s: &str| -> Result<Option<Maps>, String> {
            let v = get(s)?;
            if v.trim().is_empty() {
                return Ok(None);
            }
            Maps::open(&v, &MapConfig::default())
                .map(Some)
                .map_err(|e| format!("{}: {e}", name(s)))
        };
        let path = |s: &str| -> Result<Option<PathBuf>, String> {
            let v = get(s)?;
            Ok((!v.trim().is_empty()).then(|| PathBuf::from(v.trim())))
        };
        let helo_name = {
            let n = if lmtp && cfg.raw("lmtp_lhlo_name").is_some() {
                cfg.get("lmtp_lhlo_name").map_err(err)?
            } else {
                get("helo_name")?
            };
            let n = n.trim().to_string();
            if n.is_empty() {
                cfg.get("myhostname").map_err(err)?
            } else {
                n
            }
        };
        let helo_timeout = if lmtp && cfg.raw("lmtp_lhlo_timeout").is_some() {
            cfg.get_time("lmtp_lhlo_timeout").map_err(err)?
        } else {
            time("helo_timeout", 300)?
        };
        let timeouts = Timeouts {
            connect: time("connect_timeout", 30)?,
            helo: helo_timeout,
            starttls: time("starttls_timeout", 300)?,
            mail: time("mail_timeout", 300)?,
            rcpt: time("rcpt_timeout", 300)?,
            data_init: time("data_init_timeout", 120)?,
            data_xfer: time("data_xfer_timeout", 180)?,
            data_done: time("data_done_timeout", 600)?,
            quit: time("quit_timeout", 300)?,
        };
        let bind4 = match get("bind_address")?.trim() {
            "" => None,
            a => Some(
                a.parse()
                    .map_err(|_| format!("{}: bad IPv4 address {a}", name("bind_address")))?,
            ),
        };
        let bind6 = match get("bind_address6")?.trim() {
            "" => None,
            a => Some(
                a.trim_matches(['[', ']'])
                    .parse()
                    .map_err(|_| format!("{}: bad IPv6 address {a}", name("bind_address6")))?,
            ),
        };
        let protos: Vec<String> = split(&cfg.get("inet_protocols").map_err(err)?)
            .into_iter()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let families = if protos.iter().any(|p| p == "all") || protos.is_empty() {
            Families { v4: true, v6: true }
        } else {
            Families {
                v4: protos.iter().any(|p| p == "ipv4"),
                v6: protos.iter().any(|p| p == "ipv6"),
            }
        };
        let level_text = get("tls_security_level")?;
        let tls_level = if level_text.trim().is_empty() {
            TlsLevel::None
        } else {
            TlsLevel::parse(level_text.trim()).ok_or_else(|| {
                format!("{}: unknown level {level_text}", name("tls_security_level"))
            })?
        };
        let sasl_security_options = {
            let n = name("sasl_security_options");
            if cfg.raw(&n).is_some() {
                list("sasl_security_options")?
            } else {
                vec!["noplaintext".into(), "noanonymous".into()]
            }
        };
        let sasl_tls_security_options = {
            let n = name("sasl_tls_security_options");
            if cfg.raw(&n).is_some() {
                list("sasl_tls_security_options")?
            } else {
                sasl_security_options.clone()
            }
        };
        let verify_match = {
            let v = list("tls_verify_cert_match")?;
            if v.is_empty() {
                vec!["hostname".into()]
            } else {
                v
            }
        };
        let secure_match = {
            let v = list("tls_secure_cert_match")?;
            if v.is_empty() {
                vec!["nexthop".into(), "dot-nexthop".into()]
            } else {
                v
            }
        };
        let host_lookup = {
            let v = list("host_lookup")?;
            if v.is_empty() { vec!["dns".into()] } else { v }
        };
        let int = |s: &str, dflt: i64| -> Result<i64, String> {
            let n = name(s);
            if cfg.raw(&n).is_none() {
                return Ok(dflt);
            }
            cfg.get_int(&n).map_err(err)
        };
        Ok(Settings {
            lmtp,
            prefix,
            helo_name,
            timeouts,
            bind4,
            bind6,
            families,
            tls_level,
            tls_ca_file: path("tls_CAfile")?,
            tls_ca_path: path("tls_CApath")?,
            tls_policy_maps: maps("tls_policy_maps")?,
            tls_verify_cert_match: verify_match,
            tls_secure_cert_match: secure_match,
            sasl_enable: boolean("sasl_auth_enable", false)?,
            sasl_password_maps: maps("sasl_password_maps")?,
            sasl_security_options,
            sasl_tls_security_options,
            sasl_mechanism_filter: list("sasl_mechanism_filter")?
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            sasl_soft_bounce: boolean("sasl_auth_soft_bounce", true)?,
            skip_5xx_greeting: boolean("skip_5xx_greeting", true)?,
            cache_time_limit: time("connection_cache_time_limit", 2)?,
            reuse_time_limit: time("connection_reuse_time_limit", 300)?,
            cache_on_demand: boolean("connection_cache_on_demand", true)?,
            cache_destinations: list("connection_cache_destinations")?,
            mx_address_limit: int("mx_address_limit", 5)?.max(0) as usize,
            mx_session_limit: int("mx_session_limit", 2)?.max(0) as usize,
            discard_ehlo_keywords: list("discard_ehlo_keywords")?,
            host_lookup,
            dns_servers: cfg.get("oxipost_dns_servers").unwrap_or_default(),
            myhostname: cfg.get("myhostname").map_err(err)?,
            relayhost: cfg.get("relayhost").unwrap_or_default().trim().to_string(),
            own: crate::dest::OwnAddrs::parse(
                &cfg.get("inet_interfaces").unwrap_or_default(),
                &cfg.get("proxy_interfaces").unwrap_or_default(),
            ),
            loop_ports: loop_ports(cfg),
            fallback_relay: if lmtp {
                Vec::new()
            } else {
                split(&cfg.get("smtp_fallback_relay").unwrap_or_default())
            },
            generic: {
                let n = format!("{prefix}_generic_maps");
                let v = cfg.get(&n).unwrap_or_default();
                if v.trim().is_empty() {
                    None
                } else {
                    let maps =
                        Maps::open(&v, &MapConfig::default()).map_err(|e| format!("{n}: {e}"))?;
                    let mut local = vec![
                        cfg.get("myhostname").map_err(err)?,
                        cfg.get("myorigin").map_err(err)?,
                    ];
                    local.extend(cfg.get_list("mydestination").map_err(err)?);
                    Some(crate::generic::Generic::new(
                        maps,
                        &cfg.get("recipient_delimiter").map_err(err)?,
                        local,
                    ))
                }
            },
        })
    }
}

/// 25 and the ports of master.cf's `inet` services that run smtpd.
fn loop_ports(cfg: &Config) -> Vec<u16> {
    let mut ports = vec![25];
    let Ok(dir) = cfg.get("config_directory") else {
        return ports;
    };
    let path = std::path::Path::new(dir.trim()).join("master.cf");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return ports;
    };
    let Ok(m) = oxipost_config::MasterCf::parse(&path, &text) else {
        return ports;
    };
    for svc in &m.services {
        if svc.command != "smtpd" {
            continue;
        }
        if let Some((_, port)) = svc.inet_endpoint()
            && let Some(p) = oxipost_config::mastercf::resolve_port(&port)
            && !ports.contains(&p)
        {
            ports.push(p);
        }
    }
    ports
}

/// Splits a Postfix list (white space and commas).
pub fn split(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

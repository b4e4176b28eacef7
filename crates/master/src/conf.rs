//! The configuration master acts on: main.cf values copied into [`Settings`] once per
//! (re)load, and the services of master.cf with their endpoints resolved.

use crate::listen::{self, Endpoint};
use oxipost_config::{Config, MasterCf, Service};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which IP versions inet services use (`inet_protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub v4: bool,
    pub v6: bool,
}

/// main.cf values master uses, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_dir: PathBuf,
    /// The directory was named by `-c` or MAIL_CONFIG (workers get MAIL_CONFIG).
    pub explicit_dir: bool,
    pub queue_directory: PathBuf,
    pub data_directory: PathBuf,
    pub daemon_directory: PathBuf,
    pub pid_file: PathBuf,
    pub default_process_limit: u32,
    pub service_throttle_time: Duration,
    pub syslog_name: String,
    pub syslog_facility: String,
    pub maillog_file: String,
    pub import_environment: Vec<String>,
    /// `mail_owner`, resolved only when master runs as root (it owns the sockets).
    pub owner: Option<(u32, u32)>,
}

/// One master.cf entry and where it listens.
#[derive(Debug, Clone)]
pub struct ServiceConf {
    pub entry: Service,
    pub endpoint: Endpoint,
}

impl ServiceConf {
    pub fn key(&self) -> String {
        self.entry.key()
    }
}

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub services: Vec<ServiceConf>,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Reads main.cf and master.cf of `dir`; errors are one line naming `file:line`.
pub fn load(dir: &Path, explicit: bool) -> Result<Loaded, String> {
    let cfg = Config::load(dir, explicit).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    let master = MasterCf::load(&dir.join("master.cf")).map_err(|e| e.to_string())?;
    let get = |n: &str| cfg.get(n).map_err(|e| e.to_string());
    let queue_directory = PathBuf::from(get("queue_directory")?);
    let pid_dir = PathBuf::from(get("process_id_directory")?);
    let pid_file = queue_directory.join(pid_dir).join("master.pid");
    let default_process_limit = cfg
        .get_int("default_process_limit")
        .map_err(|e| e.to_string())?;
    let default_process_limit = u32::try_from(default_process_limit.max(0))
        .map_err(|_| "default_process_limit: value out of range".to_string())?;
    let owner = if is_root() {
        let name = get("mail_owner")?;
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .ok_or_else(|| format!("mail_owner: unknown user \"{name}\""))?;
        if user.uid.is_root() {
            // Postfix refuses a privileged mail_owner; we allow it for test setups run
            // as root, but the sockets then simply stay root's.
        }
        Some((user.uid.as_raw(), user.gid.as_raw()))
    } else {
        None
    };
    let settings = Settings {
        config_dir: dir.to_path_buf(),
        explicit_dir: explicit,
        data_directory: PathBuf::from(get("data_directory")?),
        daemon_directory: PathBuf::from(get("daemon_directory")?),
        pid_file,
        default_process_limit,
        service_throttle_time: cfg
            .get_time("service_throttle_time")
            .map_err(|e| e.to_string())?,
        syslog_name: get("syslog_name")?,
        syslog_facility: get("syslog_facility")?,
        maillog_file: get("maillog_file")?,
        import_environment: cfg
            .get_list("import_environment")
            .map_err(|e| e.to_string())?,
        owner,
        queue_directory,
    };
    let protocols = parse_protocols(&cfg.get_list("inet_protocols").map_err(|e| e.to_string())?)?;
    let interfaces = parse_interfaces(
        &cfg.get_list("inet_interfaces").map_err(|e| e.to_string())?,
        protocols,
    )?;
    let mut services = Vec::new();
    for entry in master.services {
        let endpoint =
            listen::endpoint_for(&entry, &settings, &interfaces, protocols).map_err(|m| {
                format!(
                    "{}:{}: service {}: {m}",
                    master.path.display(),
                    entry.first,
                    entry.key()
                )
            })?;
        services.push(ServiceConf { entry, endpoint });
    }
    Ok(Loaded { settings, services })
}

fn parse_protocols(words: &[String]) -> Result<Protocols, String> {
    let mut p = Protocols {
        v4: false,
        v6: false,
    };
    for w in words {
        match w.as_str() {
            "all" => {
                p.v4 = true;
                p.v6 = ipv6_supported();
            }
            "ipv4" => p.v4 = true,
            "ipv6" => p.v6 = true,
            other => return Err(format!("inet_protocols: unknown protocol \"{other}\"")),
        }
    }
    if !p.v4 && !p.v6 {
        return Err("inet_protocols: no protocol enabled".into());
    }
    Ok(p)
}

fn ipv6_supported() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The addresses of `inet_interfaces`; an empty list means "all" (wildcard addresses).
fn parse_interfaces(words: &[String], p: Protocols) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for w in words {
        match w.as_str() {
            "all" => {
                if p.v6 {
                    out.push(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
                }
                if p.v4 {
                    out.push(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                }
            }
            "loopback-only" | "localhost" => {
                if p.v4 {
                    out.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
                }
                if p.v6 {
                    out.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
                }
            }
            host => {
                for a in resolve_host(host).map_err(|m| format!("inet_interfaces: {m}"))? {
                    if (a.is_ipv4() && p.v4) || (a.is_ipv6() && p.v6) {
                        out.push(a);
                    }
                }
            }
        }
    }
    out.dedup();
    if out.is_empty() {
        return Err("inet_interfaces: no address for the enabled inet_protocols".into());
    }
    Ok(out)
}

/// An IP literal (IPv6 optionally in brackets) or a host name.
pub fn resolve_host(host: &str) -> Result<Vec<IpAddr>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<IpAddr> = (bare, 0)
        .to_socket_addrs()
        .map_err(|e| format!("host \"{host}\": {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!("host \"{host}\": no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_interfaces() {
        let p = parse_protocols(&["ipv4".into()]).expect("ok");
        assert!(p.v4 && !p.v6);
        assert!(parse_protocols(&["ipx".into()]).is_err());
        let i = parse_interfaces(&["loopback-only".into()], p).expect("ok");
        assert_eq!(i, vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]);
        let i = parse_interfaces(&["127.0.0.1".into(), "[::1]".into()], p).expect("ok");
        assert_eq!(i.len(), 1);
    }
}

//! What mailctl needs from the configuration, `check`, and the queue directories.

use oxipost_config::mastercf::{resolve_port, split_inet_name};
use oxipost_config::{Config, MasterCf, ServiceType};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct Setup {
    pub config_dir: PathBuf,
    pub queue_directory: PathBuf,
    pub data_directory: PathBuf,
    pub daemon_directory: PathBuf,
    pub pid_file: PathBuf,
    pub maillog_file: String,
    pub syslog_name: String,
    pub syslog_facility: String,
    /// (uid, gid) of mail_owner and gid of setgid_group, resolved when running as root.
    pub owner: Option<(u32, u32, u32)>,
    /// TCP ports of the inet services.
    pub inet_ports: Vec<u16>,
    /// Non-fatal findings of `check`.
    pub warnings: Vec<String>,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Loads and validates main.cf and master.cf; errors name `file:line`.
pub fn load(dir: &Path, explicit: bool) -> Result<Setup, String> {
    let cfg = Config::load(dir, explicit).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    let master = MasterCf::load(&dir.join("master.cf")).map_err(|e| e.to_string())?;
    let get = |n: &str| cfg.get(n).map_err(|e| e.to_string());
    let queue_directory = PathBuf::from(get("queue_directory")?);
    let daemon_directory = PathBuf::from(get("daemon_directory")?);
    let pid_file = queue_directory
        .join(get("process_id_directory")?)
        .join("master.pid");
    let mut warnings = Vec::new();
    let mut inet_ports = Vec::new();
    for s in &master.services {
        let at = format!("{}:{}", master.path.display(), s.first);
        if s.kind == ServiceType::Inet {
            let (_, port) = split_inet_name(&s.name);
            let p = resolve_port(&port)
                .ok_or_else(|| format!("{at}: service {}: unknown port \"{port}\"", s.key()))?;
            inet_ports.push(p);
        }
        let program = if Path::new(&s.command).is_absolute() {
            PathBuf::from(&s.command)
        } else {
            daemon_directory.join(&s.command)
        };
        if !program.exists() {
            warnings.push(format!(
                "{at}: service {}: program {} does not exist (master throttles it)",
                s.key(),
                program.display()
            ));
        }
    }
    for (n, v) in ["queue_directory", "data_directory", "daemon_directory"]
        .iter()
        .zip([
            &queue_directory,
            &PathBuf::from(get("data_directory")?),
            &daemon_directory,
        ])
    {
        if !v.is_absolute() {
            return Err(format!("{n} must be an absolute path: \"{}\"", v.display()));
        }
    }
    let owner = if is_root() {
        let name = get("mail_owner")?;
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .ok_or_else(|| format!("mail_owner: unknown user \"{name}\""))?;
        let gname = get("setgid_group")?;
        let group = nix::unistd::Group::from_name(&gname)
            .ok()
            .flatten()
            .ok_or_else(|| format!("setgid_group: unknown group \"{gname}\""))?;
        Some((user.uid.as_raw(), user.gid.as_raw(), group.gid.as_raw()))
    } else {
        None
    };
    Ok(Setup {
        config_dir: dir.to_path_buf(),
        data_directory: PathBuf::from(get("data_directory")?),
        maillog_file: get("maillog_file")?,
        syslog_name: get("syslog_name")?,
        syslog_facility: get("syslog_facility")?,
        queue_directory,
        daemon_directory,
        pid_file,
        owner,
        inet_ports,
        warnings,
    })
}

/// A queue subdirectory: name, mode, and whether its group is setgid_group.
pub const QUEUE_DIRS: &[(&str, u32, bool)] = &[
    ("incoming", 0o700, false),
    ("active", 0o700, false),
    ("deferred", 0o700, false),
    ("hold", 0o700, false),
    ("corrupt", 0o700, false),
    ("maildrop", 0o730, true),
    ("bounce", 0o700, false),
    ("defer", 0o700, false),
    ("trace", 0o700, false),
    ("public", 0o710, true),
    ("private", 0o700, false),
];

/// A directory, its mode, and its (uid, gid) when running as root.
type DirSpec = (PathBuf, u32, Option<(u32, u32)>);

impl Setup {
    /// Every directory with its mode and owner (uid, gid) when root; the pid directory
    /// and the queue directory itself belong to root, as in Postfix.
    fn dirs(&self) -> Vec<DirSpec> {
        let mut out = vec![(
            self.queue_directory.clone(),
            0o755,
            self.owner.map(|_| (0, 0)),
        )];
        for (name, mode, setgid) in QUEUE_DIRS {
            let own = self
                .owner
                .map(|(u, g, sg)| (u, if *setgid { sg } else { g }));
            out.push((self.queue_directory.join(name), *mode, own));
        }
        if let Some(pid_dir) = self.pid_file.parent() {
            out.push((pid_dir.to_path_buf(), 0o755, self.owner.map(|_| (0, 0))));
        }
        out.push((
            self.data_directory.clone(),
            0o700,
            self.owner.map(|(u, g, _)| (u, g)),
        ));
        out
    }

    /// Creates missing directories with their modes and owners.
    pub fn create_dirs(&self) -> Result<(), String> {
        for (path, mode, owner) in self.dirs() {
            if path.is_dir() {
                continue;
            }
            std::fs::create_dir_all(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            if let Some((u, g)) = owner {
                std::os::unix::fs::chown(&path, Some(u), Some(g))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Findings about the directories (missing, wrong mode or owner), for `check`.
    pub fn check_dirs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, mode, owner) in self.dirs() {
            let Ok(md) = std::fs::metadata(&path) else {
                out.push(format!("{}: missing (start creates it)", path.display()));
                continue;
            };
            if md.permissions().mode() & 0o7777 != mode {
                out.push(format!(
                    "{}: mode {:o}, expected {:o}",
                    path.display(),
                    md.permissions().mode() & 0o7777,
                    mode
                ));
            }
            if let Some((u, g)) = owner
                && (md.uid() != u || md.gid() != g)
            {
                out.push(format!(
                    "{}: owner {}:{}, expected {u}:{g}",
                    path.display(),
                    md.uid(),
                    md.gid()
                ));
            }
        }
        out
    }
}

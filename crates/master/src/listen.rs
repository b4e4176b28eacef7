//! Endpoints: what a service listens on ([`Endpoint`], compared across reloads to decide
//! what to re-bind) and opening them. master opens every endpoint itself, as root when it
//! runs as root, and never accepts on them: workers inherit the descriptors. The
//! descriptors stay blocking (workers block in accept) and close-on-exec (the spawn code
//! moves the ones a worker needs into place).

use crate::conf::{Protocols, Settings, resolve_host};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, sockopt,
};
use oxipost_config::mastercf::{resolve_port, split_inet_name};
use oxipost_config::{Service, ServiceType};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Listen queue length for every socket (Postfix uses 100 for inet; bursts need room).
const BACKLOG: i32 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One listening socket per address.
    Tcp(Vec<SocketAddr>),
    Unix {
        path: PathBuf,
        mode: u32,
    },
    UnixDgram {
        path: PathBuf,
        mode: u32,
    },
    Fifo {
        path: PathBuf,
        mode: u32,
    },
    /// `pass` services (descriptor passing) are not supported yet: nothing is opened.
    Unsupported,
}

impl Endpoint {
    /// The socket or fifo path of a local endpoint.
    pub fn path(&self) -> Option<&PathBuf> {
        match self {
            Endpoint::Unix { path, .. }
            | Endpoint::UnixDgram { path, .. }
            | Endpoint::Fifo { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Where a service listens, from its master.cf name and type and main.cf's
/// `inet_interfaces`/`inet_protocols` (already resolved into `interfaces`).
pub fn endpoint_for(
    svc: &Service,
    s: &Settings,
    interfaces: &[IpAddr],
    p: Protocols,
) -> Result<Endpoint, String> {
    let local_path = || {
        let sub = if svc.is_private() {
            "private"
        } else {
            "public"
        };
        if svc.name.contains('/') || svc.name.is_empty() || svc.name.starts_with('.') {
            return Err(format!("bad local service name \"{}\"", svc.name));
        }
        Ok(s.queue_directory.join(sub).join(&svc.name))
    };
    Ok(match svc.kind {
        ServiceType::Inet => {
            let (host, port) = split_inet_name(&svc.name);
            let port =
                resolve_port(&port).ok_or_else(|| format!("unknown service port \"{port}\""))?;
            let ips: Vec<IpAddr> = match host.as_deref() {
                None | Some("") | Some("*") => interfaces.to_vec(),
                Some(h) => resolve_host(h)?
                    .into_iter()
                    .filter(|a| (a.is_ipv4() && p.v4) || (a.is_ipv6() && p.v6))
                    .collect(),
            };
            if ips.is_empty() {
                return Err("no address to listen on for the enabled inet_protocols".into());
            }
            Endpoint::Tcp(
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect(),
            )
        }
        ServiceType::Unix => Endpoint::Unix {
            path: local_path()?,
            mode: if svc.is_private() { 0o600 } else { 0o666 },
        },
        ServiceType::UnixDgram => Endpoint::UnixDgram {
            path: local_path()?,
            mode: if svc.is_private() { 0o600 } else { 0o666 },
        },
        ServiceType::Fifo => Endpoint::Fifo {
            path: local_path()?,
            mode: if svc.is_private() { 0o600 } else { 0o622 },
        },
        ServiceType::Pass => Endpoint::Unsupported,
    })
}

/// Opens an endpoint; `owner` (uid, gid) owns local sockets and fifos when master is root.
pub fn open(ep: &Endpoint, owner: Option<(u32, u32)>) -> Result<Vec<OwnedFd>, String> {
    match ep {
        Endpoint::Tcp(addrs) => addrs.iter().map(open_tcp).collect(),
        Endpoint::Unix { path, mode } => {
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixListener::bind(path)
                .map_err(|e| format!("bind {}: {e}", path.display()))?;
            finish_local(path, *mode, owner)?;
            Ok(vec![OwnedFd::from(l)])
        }
        Endpoint::UnixDgram { path, mode } => {
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixDatagram::bind(path)
                .map_err(|e| format!("bind {}: {e}", path.display()))?;
            finish_local(path, *mode, owner)?;
            Ok(vec![OwnedFd::from(l)])
        }
        Endpoint::Fifo { path, mode } => {
            use std::os::unix::fs::FileTypeExt;
            let is_fifo = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_fifo())
                .unwrap_or(false);
            if !is_fifo {
                let _ = std::fs::remove_file(path);
                nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
            }
            finish_local(path, *mode, owner)?;
            // Read-write so that the fifo never reports end-of-file to workers.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| format!("open {}: {e}", path.display()))?;
            Ok(vec![OwnedFd::from(f)])
        }
        Endpoint::Unsupported => Ok(Vec::new()),
    }
}

fn finish_local(path: &PathBuf, mode: u32, owner: Option<(u32, u32)>) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

fn open_tcp(addr: &SocketAddr) -> Result<OwnedFd, String> {
    let what = |e: nix::Error| format!("bind {} port {}: {}", addr.ip(), addr.port(), e.desc());
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = nix::sys::socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(what)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(what)?;
    if addr.is_ipv6() {
        // IPv4 gets its own socket, as Postfix does: workers see plain IPv4 addresses.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(what)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(*addr)).map_err(what)?;
    let backlog = Backlog::new(BACKLOG).map_err(what)?;
    listen(&fd, backlog).map_err(what)?;
    Ok(fd)
}

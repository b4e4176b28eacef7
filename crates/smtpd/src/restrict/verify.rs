//! Address verification (`reject_unverified_sender`, `reject_unverified_recipient`), as
//! Postfix's `verify` service answers smtpd, but inside smtpd: a probe runs the delivery
//! decision for the address without delivering anything, and its result is kept in a
//! cache shared by every smtpd process.
//!
//! - Local, virtual alias and virtual mailbox addresses are decided from the tables the
//!   agents use (local users and `alias_maps` or `local_recipient_maps`, canonical and
//!   virtual alias maps, `virtual_mailbox_maps`): unknown is undeliverable with the
//!   agents' text (`unknown user: "name"`).
//! - Other addresses are routed as qmgr would (`transport_maps`: an `smtp`/`relay`/`lmtp`
//!   next hop, `error:` undeliverable, `retry:` deferred, `discard:` and other agents
//!   deliverable; then `relayhost`, then the domain's MX hosts) and get an SMTP probe:
//!   `EHLO`, `MAIL FROM:<$address_verify_sender>`, `RCPT TO`, `QUIT`, never `DATA`. A 2xx
//!   to RCPT is deliverable, 5xx undeliverable, anything else (4xx, no connection) a
//!   deferral, with Postfix's `host H[A] said: ... (in reply to RCPT TO command)` reason.
//! - The cache is the SQLite file named by `address_verify_map` (the path after the
//!   `type:` prefix, plus `.sqlite`; empty: this process's memory only), with
//!   `address_verify_positive_expire_time`, `address_verify_negative_expire_time` and
//!   `address_verify_negative_cache`. A probe runs on its own thread; smtpd waits for it
//!   at most `address_verify_poll_count` × `address_verify_poll_delay`, then answers
//!   "unverified address: Address verification in progress" (a `defer_if_permit` by
//!   default) and the finished probe's result is found in the cache next time.
//!
//! Not done (Postfix does them): `relay_transport`/`default_transport` other than SMTP,
//! the refresh times (an expired entry is probed again), and a separate daemon.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxipost_config::Config;
use oxipost_smtp_client_proto::{Reply as SmtpReply, ReplyParser};

use super::{AddrClass, Context, ErrClass, Eval, Restrictions, SENDER, Status};

/// What a probe found (Postfix's `DEL_RCPT_STAT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Deliverable,
    Undeliverable(String),
    Deferred(String),
}

impl Verdict {
    fn code(&self) -> i64 {
        match self {
            Verdict::Deliverable => 0,
            Verdict::Deferred(_) => 1,
            Verdict::Undeliverable(_) => 2,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Verdict::Deliverable => "",
            Verdict::Deferred(r) | Verdict::Undeliverable(r) => r,
        }
    }
}

/// The address verification parameters.
#[derive(Debug, Clone, Default)]
pub struct VerifySettings {
    pub cache: Option<PathBuf>,
    pub poll_count: u32,
    pub poll_delay: Duration,
    pub sender: String,
    pub positive_expire: Duration,
    pub negative_expire: Duration,
    pub negative_cache: bool,
    pub sender_reject_code: u16,
    pub recipient_reject_code: u16,
    pub sender_defer_code: u16,
    pub recipient_defer_code: u16,
    pub sender_defer_now: bool,
    pub recipient_defer_now: bool,
    pub sender_reason: String,
    pub recipient_reason: String,
    pub relayhost: String,
    pub connect_timeout: Duration,
    /// `transport_maps` (routes probes as qmgr routes mail).
    pub transport_maps: Option<std::sync::Arc<oxipost_maps::Maps>>,
    pub transport_parent_matches: bool,
}

fn text(cfg: &Config, name: &str) -> Result<String, String> {
    cfg.get(name)
        .map(|v| v.trim().to_string())
        .map_err(|e| format!("parameter {name}: {e}"))
}

fn code(cfg: &Config, name: &str) -> Result<u16, String> {
    let v = text(cfg, name)?;
    v.parse::<u16>()
        .ok()
        .filter(|c| (400..600).contains(c))
        .ok_or_else(|| format!("parameter {name}: bad reply code {v:?}"))
}

impl VerifySettings {
    pub fn from_config(cfg: &Config, myorigin: &str) -> Result<VerifySettings, String> {
        let time = |n: &str| cfg.get_time(n).map_err(|e| format!("parameter {n}: {e}"));
        let map = text(cfg, "address_verify_map")?;
        let cache = (!map.is_empty()).then(|| {
            let path = map.split_once(':').map_or(map.as_str(), |(_, p)| p);
            PathBuf::from(format!("{path}.sqlite"))
        });
        let mut sender = text(cfg, "address_verify_sender")?;
        if sender == "<>" {
            sender.clear();
        } else if !sender.is_empty() && !sender.contains('@') && !myorigin.is_empty() {
            sender = format!("{sender}@{myorigin}");
        }
        let defer_now =
            |n: &str| -> Result<bool, String> { Ok(text(cfg, n)?.eq_ignore_ascii_case("defer")) };
        Ok(VerifySettings {
            cache,
            poll_count: cfg
                .get_int("address_verify_poll_count")
                .map_err(|e| format!("parameter address_verify_poll_count: {e}"))?
                .clamp(0, 100) as u32,
            poll_delay: time("address_verify_poll_delay")?,
            sender,
            positive_expire: time("address_verify_positive_expire_time")?,
            negative_expire: time("address_verify_negative_expire_time")?,
            negative_cache: cfg
                .get_bool("address_verify_negative_cache")
                .map_err(|e| format!("parameter address_verify_negative_cache: {e}"))?,
            sender_reject_code: code(cfg, "unverified_sender_reject_code")?,
            recipient_reject_code: code(cfg, "unverified_recipient_reject_code")?,
            sender_defer_code: code(cfg, "unverified_sender_defer_code")?,
            recipient_defer_code: code(cfg, "unverified_recipient_defer_code")?,
            sender_defer_now: defer_now("unverified_sender_tempfail_action")?,
            recipient_defer_now: defer_now("unverified_recipient_tempfail_action")?,
            sender_reason: text(cfg, "unverified_sender_reject_reason")?,
            recipient_reason: text(cfg, "unverified_recipient_reject_reason")?,
            relayhost: text(cfg, "relayhost")?,
            connect_timeout: Duration::from_secs(10),
            transport_maps: {
                let v = text(cfg, "transport_maps")?;
                if v.is_empty() {
                    None
                } else {
                    match oxipost_maps::Maps::open(&v, &oxipost_maps::MapConfig::default()) {
                        Ok(m) => Some(std::sync::Arc::new(m)),
                        Err(e) => {
                            oxipost_log::warning!("transport_maps for address verification: {e}");
                            None
                        }
                    }
                }
            },
            transport_parent_matches: text(cfg, "parent_domain_matches_subdomains")?
                .split(|c: char| c == ',' || c.is_whitespace())
                .any(|w| w == "transport_maps"),
        })
    }
}

/// This process's view of results (always), and the probes it has running.
fn memory() -> &'static Mutex<HashMap<String, (Verdict, SystemTime)>> {
    static M: OnceLock<Mutex<HashMap<String, (Verdict, SystemTime)>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

fn running() -> &'static Mutex<HashSet<String>> {
    static R: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashSet::new()))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The cache database; `None` (warned about once per process) when it cannot be used:
/// results are then kept in this process's memory only.
fn open_cache(path: &PathBuf) -> Option<rusqlite::Connection> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let warn = |e: rusqlite::Error| {
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            oxipost_log::warning!(
                "address_verify_map {}: {e}; results are kept in memory only",
                path.display()
            );
        }
    };
    let c = rusqlite::Connection::open(path).map_err(warn).ok()?;
    let _ = c.busy_timeout(Duration::from_secs(2));
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS verify (address TEXT PRIMARY KEY, status INTEGER NOT NULL, updated INTEGER NOT NULL, reason TEXT NOT NULL)",
    )
    .map_err(warn)
    .ok()?;
    Some(c)
}

/// A cached result that has not expired.
fn cache_get(v: &VerifySettings, addr: &str) -> Option<Verdict> {
    let key = addr.to_ascii_lowercase();
    let fresh = |verdict: &Verdict, age: Duration| match verdict {
        Verdict::Deliverable => age < v.positive_expire,
        _ => age < v.negative_expire,
    };
    if let Ok(m) = memory().lock()
        && let Some((verdict, at)) = m.get(&key)
        && fresh(verdict, at.elapsed().unwrap_or_default())
    {
        return Some(verdict.clone());
    }
    let c = open_cache(v.cache.as_ref()?)?;
    let (status, updated, reason): (i64, i64, String) = c
        .query_row(
            "SELECT status, updated, reason FROM verify WHERE address = ?1",
            [&key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()?;
    let verdict = match status {
        0 => Verdict::Deliverable,
        2 => Verdict::Undeliverable(reason),
        _ => Verdict::Deferred(reason),
    };
    let age = Duration::from_secs(now_secs().saturating_sub(updated).max(0) as u64);
    fresh(&verdict, age).then_some(verdict)
}

fn cache_put(v: &VerifySettings, addr: &str, verdict: &Verdict) {
    let key = addr.to_ascii_lowercase();
    if let Ok(mut m) = memory().lock() {
        m.insert(key.clone(), (verdict.clone(), SystemTime::now()));
    }
    // Deferrals are never kept (the next request probes again); failures only with
    // address_verify_negative_cache.
    if matches!(verdict, Verdict::Deferred(_))
        || (matches!(verdict, Verdict::Undeliverable(_)) && !v.negative_cache)
    {
        if let Ok(mut m) = memory().lock() {
            m.remove(&key);
        }
        return;
    }
    let Some(c) = v.cache.as_ref().and_then(open_cache) else {
        return;
    };
    if let Err(e) = c.execute(
        "INSERT OR REPLACE INTO verify (address, status, updated, reason) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![key, verdict.code(), now_secs(), verdict.reason()],
    ) {
        oxipost_log::warning!("address_verify_map update for {addr}: {e}");
    }
}

/// Runs the probe for `addr` on its own thread unless one is running; the result comes
/// back on the channel (and goes to the cache).
fn start_probe(r: &Restrictions, addr: &str) -> Option<mpsc::Receiver<Verdict>> {
    let key = addr.to_ascii_lowercase();
    {
        let mut run = running().lock().ok()?;
        if !run.insert(key.clone()) {
            return None;
        }
    }
    let (tx, rx) = mpsc::channel();
    let fail_key = key.clone();
    let r = r.clone();
    let addr = addr.to_string();
    let spawned = std::thread::Builder::new()
        .name("verify".into())
        .spawn(move || {
            let verdict = probe(&r, &addr);
            let status = match &verdict {
                Verdict::Deliverable => "deliverable".to_string(),
                Verdict::Undeliverable(w) => format!("undeliverable ({w})"),
                Verdict::Deferred(w) => format!("deferred ({w})"),
            };
            oxipost_log::info!(
                "address verification: <{}>: status={status}",
                crate::log::clean(&addr)
            );
            // The event loop holds its log lines until it wakes: this thread is not it.
            oxipost_log::flush();
            cache_put(&r.verify, &addr, &verdict);
            if let Ok(mut run) = running().lock() {
                run.remove(&key);
            }
            let _ = tx.send(verdict);
        });
    if spawned.is_err() {
        if let Ok(mut run) = running().lock() {
            run.remove(&fail_key);
        }
        return None;
    }
    Some(rx)
}

/// The delivery decision for `addr`, without delivering.
pub fn probe(r: &Restrictions, addr: &str) -> Verdict {
    let res = r.resolve(addr);
    let cx = Context::default();
    let e = Eval::new(r, &cx, super::Actions::default());
    let local = res.class == AddrClass::Local;
    let mut aliases: Vec<&super::TableRef> = r.canonical_maps.iter().collect();
    if let Some(v) = &r.virtual_alias_maps {
        aliases.push(v);
    }
    for t in aliases {
        match e.find(t, &res.address, local) {
            Ok(true) => return Verdict::Deliverable,
            Ok(false) => {}
            Err(()) => return Verdict::Deferred("table lookup failure".into()),
        }
    }
    match res.class {
        AddrClass::Local => {
            let lower = res.local.to_ascii_lowercase();
            let base = oxipost_maps::addr::split_extension(&lower, &r.recipient_delimiter).0;
            if base == "postmaster" || base == "mailer-daemon" {
                return Verdict::Deliverable;
            }
            let known = match &r.local_recipient_maps {
                Some(t) => e
                    .find(t, &res.address, true)
                    .map(|f| f || r.local_users.contains(base)),
                None => Ok(crate::policy::is_known_local_user(
                    &r.local_users,
                    &r.recipient_delimiter,
                    &res.local,
                ) || match &r.alias_maps {
                    Some(t) => e.find(t, &res.address, true).unwrap_or(false),
                    None => false,
                }),
            };
            match known {
                Ok(true) => Verdict::Deliverable,
                Ok(false) => Verdict::Undeliverable(format!("unknown user: \"{base}\"")),
                Err(()) => Verdict::Deferred("table lookup failure".into()),
            }
        }
        AddrClass::VirtualAlias => {
            Verdict::Undeliverable("User unknown in virtual alias table".into())
        }
        AddrClass::VirtualMailbox => match &r.virtual_mailbox_maps {
            Some(t) => match e.find(t, &res.address, false) {
                Ok(true) => Verdict::Deliverable,
                Ok(false) => Verdict::Undeliverable(format!("unknown user: \"{}\"", res.address)),
                Err(()) => Verdict::Deferred("table lookup failure".into()),
            },
            None => Verdict::Deliverable,
        },
        AddrClass::Relay | AddrClass::Default => smtp_probe(r, &res.address, &res.domain),
    }
}

/// `transport_maps` for the address, in transport(5)'s order (full address, address
/// without extension, domain, parent domains, `*`).
fn transport_lookup(
    r: &Restrictions,
    address: &str,
    domain: &str,
) -> Result<Option<String>, String> {
    let Some(maps) = r.verify.transport_maps.as_deref() else {
        return Ok(None);
    };
    let partial = Some(oxipost_maps::MatchKind::Fixed);
    let e = |e: oxipost_maps::MapError| e.message;
    if let Some(v) = maps.lookup(address).map_err(e)? {
        return Ok(Some(v));
    }
    if let Some((local, dom)) = address.rsplit_once('@') {
        let (user, ext) = oxipost_maps::addr::split_extension(local, &r.recipient_delimiter);
        if ext.is_some()
            && let Some(v) = maps
                .lookup_kind(&format!("{user}@{dom}"), partial)
                .map_err(e)?
        {
            return Ok(Some(v));
        }
    }
    let mut keys = vec![domain.to_string()];
    let mut rest = domain;
    while let Some(i) = rest.find('.') {
        let parent = &rest[i + 1..];
        keys.push(if r.verify.transport_parent_matches {
            parent.to_string()
        } else {
            format!(".{parent}")
        });
        rest = parent;
    }
    keys.push("*".into());
    for k in keys.iter().filter(|k| !k.is_empty()) {
        if let Some(v) = maps.lookup_kind(k, partial).map_err(e)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The hosts to try for a next hop: `[host]:port` without MX lookup, else the MX hosts of
/// `host` (itself without MX), port 25 unless given.
fn destinations(r: &Restrictions, spec: &str) -> Result<Vec<(String, u16, bool)>, String> {
    let spec = spec.to_string();
    let (host, port) = match spec.strip_prefix('[') {
        Some(rest) => {
            let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
            let port = after
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(25);
            return Ok(vec![(h.to_string(), port, false)]);
        }
        None => match spec.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => {
                (h.to_string(), p.parse().unwrap_or(25))
            }
            _ => (spec, 25),
        },
    };
    let Some(res) = r.resolver.as_ref() else {
        return Err("no DNS resolver".into());
    };
    match res.mx(&host) {
        Ok(mx) if mx.is_empty() => Ok(vec![(host, port, false)]),
        Ok(mx) => Ok(mx
            .into_iter()
            .filter(|m| !m.exchange.is_empty())
            .map(|m| (m.exchange, port, true))
            .collect()),
        Err(oxipost_dns::DnsError::NotFound) => Err(format!(
            "Host or domain name not found. Name service error for name={host} type=MX: Host not found"
        )),
        Err(e) => Err(format!(
            "Host or domain name not found. Name service error for name={host} type=MX: {e}"
        )),
    }
}

/// RCPT without DATA at the first host that answers.
fn smtp_probe(r: &Restrictions, addr: &str, domain: &str) -> Verdict {
    // The route qmgr would take: transport_maps, then relayhost, then the domain.
    let mut nexthop = if r.verify.relayhost.is_empty() {
        domain.to_string()
    } else {
        r.verify.relayhost.clone()
    };
    match transport_lookup(r, addr, domain) {
        Err(e) => return Verdict::Deferred(format!("transport_maps lookup failure: {e}")),
        Ok(None) => {}
        Ok(Some(v)) => {
            let (transport, hop) = v.trim().split_once(':').unwrap_or((v.trim(), ""));
            match transport {
                "error" => {
                    return Verdict::Undeliverable(if hop.is_empty() {
                        "mail for this domain is not accepted".into()
                    } else {
                        hop.to_string()
                    });
                }
                "retry" => return Verdict::Deferred(hop.to_string()),
                "discard" => return Verdict::Deliverable,
                "" | "smtp" | "relay" | "lmtp" => {
                    if !hop.is_empty() {
                        nexthop = hop.to_string();
                    }
                }
                // Other agents (local, virtual, pipe) accept in verify mode.
                _ => return Verdict::Deliverable,
            }
        }
    }
    let hosts = match destinations(r, &nexthop) {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => return Verdict::Undeliverable(format!("no mail host for {domain}")),
        Err(e) if e.contains("Host not found") => return Verdict::Undeliverable(e),
        Err(e) => return Verdict::Deferred(e),
    };
    let mut last = String::from("no mail host answered");
    for (host, port, _) in hosts.iter().take(5) {
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match r.resolver.as_ref().map(|res| res.addresses(host)) {
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    last = format!(
                        "Host or domain name not found. Name service error for name={host} type=A: {e}"
                    );
                    continue;
                }
                None => continue,
            },
        };
        for ip in addrs.into_iter().take(2) {
            match smtp_conversation(r, addr, host, ip, *port) {
                Ok(v) => return v,
                Err(e) => last = e,
            }
        }
    }
    Verdict::Deferred(last)
}

/// One SMTP session; `Err` when this host gave no answer about the address (try the next).
fn smtp_conversation(
    r: &Restrictions,
    addr: &str,
    host: &str,
    ip: IpAddr,
    port: u16,
) -> Result<Verdict, String> {
    let sa = SocketAddr::new(ip, port);
    let who = format!("{host}[{ip}]");
    let stream = TcpStream::connect_timeout(&sa, r.verify.connect_timeout)
        .map_err(|e| format!("connect to {who}:{port}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("connect to {who}:{port}: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut parser = ReplyParser::new();
    let mut read_reply = |parser: &mut ReplyParser| -> Result<SmtpReply, String> {
        loop {
            if let Some(r) = parser.next_reply() {
                return r.map_err(|e| format!("{who}: {e:?}"));
            }
            let mut line = Vec::new();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("lost connection with {who}: {e}"))?;
            if n == 0 {
                return Err(format!("lost connection with {who}"));
            }
            parser.push(&line);
        }
    };
    let said = |rep: &SmtpReply, cmd: &str| {
        format!(
            "host {who} said: {} (in reply to {cmd} command)",
            rep.text()
        )
    };
    let mut send = |bytes: &[u8]| -> Result<(), String> {
        writer
            .write_all(bytes)
            .map_err(|e| format!("lost connection with {who}: {e}"))
    };
    let greeting = read_reply(&mut parser)?;
    if greeting.code != 220 {
        let _ = send(b"QUIT\r\n");
        return Err(format!(
            "host {who} refused to talk to me: {}",
            greeting.text()
        ));
    }
    send(format!("EHLO {}\r\n", r.myhostname).as_bytes())?;
    let mut hello = read_reply(&mut parser)?;
    if !hello.is_positive() {
        send(format!("HELO {}\r\n", r.myhostname).as_bytes())?;
        hello = read_reply(&mut parser)?;
        if !hello.is_positive() {
            let _ = send(b"QUIT\r\n");
            return Err(said(&hello, "HELO"));
        }
    }
    send(format!("MAIL FROM:<{}>\r\n", r.verify.sender).as_bytes())?;
    let mail = read_reply(&mut parser)?;
    if !mail.is_positive() {
        let _ = send(b"QUIT\r\n");
        return if mail.class() == 5 {
            Ok(Verdict::Undeliverable(said(&mail, "MAIL FROM")))
        } else {
            Err(said(&mail, "MAIL FROM"))
        };
    }
    send(format!("RCPT TO:<{addr}>\r\n").as_bytes())?;
    let rcpt = read_reply(&mut parser)?;
    let _ = send(b"QUIT\r\n");
    Ok(match rcpt.class() {
        2 => Verdict::Deliverable,
        5 => Verdict::Undeliverable(said(&rcpt, "RCPT TO")),
        _ => Verdict::Deferred(said(&rcpt, "RCPT TO")),
    })
}

impl Eval<'_> {
    /// `reject_unverified_sender` / `reject_unverified_recipient` (Postfix's
    /// `reject_unverified_address`).
    pub(super) fn reject_unverified(&mut self, addr: &str, reply_class: &str) -> Status {
        if addr.is_empty() {
            return Status::Dunno;
        }
        let v = &self.r.verify;
        let sender = reply_class == SENDER;
        let dsn = if sender { "4.1.7" } else { "4.1.1" };
        let (rcode, dcode, defer_now, alt) = if sender {
            (
                v.sender_reject_code,
                v.sender_defer_code,
                v.sender_defer_now,
                v.sender_reason.clone(),
            )
        } else {
            (
                v.recipient_reject_code,
                v.recipient_defer_code,
                v.recipient_defer_now,
                v.recipient_reason.clone(),
            )
        };
        let verdict = match cache_get(v, addr) {
            Some(found) => Some(found),
            None => {
                let wait = v.poll_delay.saturating_mul(v.poll_count.max(1));
                match start_probe(self.r, addr) {
                    Some(rx) => rx.recv_timeout(wait).ok(),
                    None => {
                        // Another request of this process is probing: poll the cache.
                        let mut found = None;
                        for _ in 0..v.poll_count {
                            std::thread::sleep(v.poll_delay);
                            found = cache_get(v, addr);
                            if found.is_some() {
                                break;
                            }
                        }
                        found
                    }
                }
            }
        };
        // As Postfix: the reply code decides the wording. With the default 450 codes even
        // an undeliverable address is "unverified" (a defer_if_permit); a 5xx code says
        // "undeliverable". unverified_*_reject_reason replaces the probe's reason.
        let (code, why) = match verdict {
            Some(Verdict::Deliverable) => return Status::Dunno,
            Some(Verdict::Undeliverable(why)) => (rcode, why),
            Some(Verdict::Deferred(why)) => (dcode, why),
            None => (dcode, "Address verification in progress".to_string()),
        };
        let why = if alt.is_empty() { why } else { alt };
        if code / 100 == 4 {
            let why: String = why.chars().take(250).collect();
            let text = format!("<{addr}>: {reply_class} rejected: unverified address: {why}");
            self.defer_if_permit(!defer_now, code, dsn, text)
        } else {
            self.reject(
                ErrClass::Policy,
                code,
                dsn,
                format!("<{addr}>: {reply_class} rejected: undeliverable address: {why}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayhost_destinations() {
        let r = Restrictions::default();
        assert_eq!(
            destinations(&r, "[127.0.0.1]:2525"),
            Ok(vec![("127.0.0.1".to_string(), 2525, false)])
        );
        assert_eq!(
            destinations(&r, "[192.0.2.1]"),
            Ok(vec![("192.0.2.1".to_string(), 25, false)])
        );
    }

    #[test]
    fn verdict_codes() {
        assert_eq!(Verdict::Deliverable.code(), 0);
        assert_eq!(Verdict::Undeliverable("x".into()).reason(), "x");
    }
}

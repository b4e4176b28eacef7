//! One delivery request: read the message from the queue file, find the servers for the
//! next hop, open a session (or reuse the cached one: a batch of messages for one
//! destination goes over one connection, with `RSET` between transactions), run the
//! transaction, and turn every recipient's reply into a result: 2xx delivered, 4xx
//! deferred, 5xx bounced, with the server's text as Postfix words it. A recipient left
//! without a reply (the connection broke) is deferred.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oxipost_dns::Resolver;
use oxipost_ipc::{DeliveryRequest, Outcome, RcptResult};
use oxipost_queue::QueueFile;
use oxipost_queue::format::{BodyType, Ret};
use oxipost_smtp_client_proto::{Body, MailSpec, RcptSpec, Transaction, TxOptions, content};
use rustls::RootCertStore;

use crate::conn::{Failure, LoopCheck, Payload, Plan, Session};
use crate::dest::{self, Nexthop};
use crate::report::Line;
use crate::sasl;
use crate::settings::Settings;
use crate::tls::{TlsLevel, TlsPolicy};

/// The agent's state across requests: settings, resolver, trust anchors and the cached
/// session.
pub struct Agent {
    pub s: Settings,
    dns: Result<Resolver, String>,
    roots: Arc<RootCertStore>,
    cache: Option<Cached>,
}

struct Cached {
    key: String,
    session: Session,
    /// The server's address (None for a UNIX-domain socket).
    addr: Option<SocketAddr>,
    idle_since: Instant,
}

/// A message read from its queue file.
struct Message {
    mail: MailSpec,
    content: Vec<u8>,
}

/// One server of a next hop.
struct Target {
    name: String,
    addr: Option<SocketAddr>,
    unix: Option<std::path::PathBuf>,
    /// Of the best MX preference left (see [`dest::Candidate::best`]).
    best: bool,
}

/// A decided result before it becomes an [`RcptResult`].
#[derive(Clone)]
struct Decided {
    outcome: Outcome,
    dsn: String,
    text: String,
    relay: String,
}

impl Agent {
    /// Prepares the agent: the resolver (failures are reported per request, as
    /// temporary) and the trust anchors for TLS.
    pub fn new(s: Settings) -> Agent {
        let dns = Resolver::from_param(&s.dns_servers).map_err(|e| e.to_string());
        let roots = match crate::tls::root_store(s.tls_ca_file.as_deref(), s.tls_ca_path.as_deref())
        {
            Ok(r) => r,
            Err(e) => {
                oxipost_log::warning!("TLS trust anchors: {e}");
                RootCertStore::empty()
            }
        };
        Agent {
            s,
            dns,
            roots: Arc::new(roots),
            cache: None,
        }
    }

    /// True while a session is cached.
    pub fn has_cached(&self) -> bool {
        self.cache.is_some()
    }

    /// Closes the cached session with QUIT.
    pub fn close_cached(&mut self) {
        if let Some(c) = self.cache.take() {
            c.session.quit();
        }
    }

    /// Closes the cached session when it has been idle longer than the cache time limit.
    pub fn expire_cached(&mut self) {
        if self
            .cache
            .as_ref()
            .is_some_and(|c| c.idle_since.elapsed() >= self.s.cache_time_limit)
        {
            self.close_cached();
        }
    }

    /// Delivers one request and logs one line per recipient.
    pub fn deliver(&mut self, req: &DeliveryRequest) -> Vec<RcptResult> {
        let received = SystemTime::now();
        let before = arrival_delay(req.arrival, received);
        let start = Instant::now();
        let mut timing = (Duration::ZERO, Duration::ZERO, 1u32);
        let decided = match read_message(req).and_then(|m| self.generic_message(m)) {
            Ok(msg) => self.deliver_message(req, &msg, start, &mut timing),
            Err(text) => vec![
                Decided {
                    outcome: Outcome::Deferred,
                    dsn: "4.3.0".into(),
                    text,
                    relay: "none".into(),
                };
                req.recipients.len()
            ],
        };
        self.report(req, before, timing, decided)
    }

    /// Delivers a batch (one destination): after the destination itself failed (no
    /// server reached), the rest is deferred without trying again, as Postfix's qmgr
    /// does for a dead destination.
    pub fn deliver_batch(&mut self, reqs: &[DeliveryRequest]) -> Vec<Vec<RcptResult>> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut dead: Option<(String, String)> = None;
        for req in reqs {
            if let Some((dsn, text)) = &dead {
                let before = arrival_delay(req.arrival, SystemTime::now());
                let d = Decided {
                    outcome: Outcome::Deferred,
                    dsn: dsn.clone(),
                    text: format!("delivery temporarily suspended: {text}"),
                    relay: "none".into(),
                };
                let decided = vec![d; req.recipients.len()];
                out.push(self.report(req, before, (Duration::ZERO, Duration::ZERO, 1), decided));
                continue;
            }
            let results = self.deliver(req);
            // No server reached: every recipient deferred with relay=none, for a reason
            // other than our own (4.3.0 a queue file or table error, 4.3.5 a bad next hop).
            if let Some(first) = results.first()
                && results.iter().all(|r| {
                    r.outcome == Outcome::Deferred
                        && r.relay == "none"
                        && !matches!(r.status.as_str(), "4.3.0" | "4.3.5")
                })
            {
                dead = Some((first.status.clone(), first.text.clone()));
            }
            out.push(results);
        }
        out
    }

    /// One log line per recipient, and the results for qmgr.
    fn report(
        &self,
        req: &DeliveryRequest,
        before: Duration,
        timing: (Duration, Duration, u32),
        decided: Vec<Decided>,
    ) -> Vec<RcptResult> {
        let (setup, xfer, conn_use) = timing;
        req.recipients
            .iter()
            .zip(decided)
            .map(|(r, d)| {
                let orig = r
                    .orcpt
                    .as_deref()
                    .and_then(|o| o.split_once(';').map(|(_, a)| a));
                let line = Line {
                    queue_id: &req.queue_id,
                    to: &r.address,
                    orig_to: orig,
                    relay: &d.relay,
                    conn_use,
                    delays: [before, setup, xfer],
                    dsn: &d.dsn,
                    outcome: d.outcome,
                    text: &d.text,
                };
                oxipost_log::info!("{}", line.render());
                RcptResult {
                    index: r.index,
                    outcome: d.outcome,
                    status: d.dsn,
                    text: d.text,
                    relay: d.relay,
                }
            })
            .collect()
    }

    fn deliver_message(
        &mut self,
        req: &DeliveryRequest,
        msg: &Message,
        start: Instant,
        timing: &mut (Duration, Duration, u32),
    ) -> Vec<Decided> {
        let n = req.recipients.len();
        let all = |outcome, dsn: &str, text: String, relay: &str| {
            vec![
                Decided {
                    outcome,
                    dsn: dsn.into(),
                    text,
                    relay: relay.into(),
                };
                n
            ]
        };
        let default_port = if self.s.lmtp { 24 } else { 25 };
        let nexthop_text = if req.nexthop.trim().is_empty() {
            req.recipients
                .first()
                .and_then(|r| r.address.rsplit_once('@'))
                .map(|(_, d)| d.to_string())
                .unwrap_or_default()
        } else {
            req.nexthop.trim().to_string()
        };
        let nexthop = match Nexthop::parse(&nexthop_text, default_port, self.s.lmtp) {
            Ok(n) => n,
            Err(e) => {
                return all(
                    Outcome::Deferred,
                    "4.3.5",
                    format!("bad next-hop destination {nexthop_text}: {e}"),
                    "none",
                );
            }
        };
        let key = nexthop_text.to_ascii_lowercase();
        let mut rcpts: Vec<RcptSpec> = req
            .recipients
            .iter()
            .map(|r| RcptSpec {
                address: r.address.clone(),
                notify: r.notify.clone(),
                orcpt: r.orcpt.clone(),
            })
            .collect();
        if let Some(g) = &self.s.generic {
            for r in &mut rcpts {
                match g.map(&r.address) {
                    Ok(a) => r.address = a,
                    Err(e) => {
                        let text = format!("{}_generic_maps lookup error: {e}", self.s.prefix);
                        return all(Outcome::Deferred, "4.3.0", text, "none");
                    }
                }
            }
        }

        // Recipients with a final answer (2xx, 5xx, or 4xx from the last server tried),
        // and the latest temporary answer of the others: a 4xx from one server, or a
        // session that broke, leaves the recipient to the next one (the next MX host
        // within smtp_mx_address_limit / smtp_mx_session_limit, then the fall-back
        // relays), and only what no server accepted is deferred, with the last words.
        let mut finals: Vec<Option<Decided>> = vec![None; n];
        let mut soft: Vec<Option<Decided>> = vec![None; n];

        // A cached session to the same destination first. What it defers goes on to the
        // other servers of the destination, as after a fresh session (Postfix counts the
        // cached session towards the session limit and skips its address).
        let mut reused: Option<Option<SocketAddr>> = None;
        // Like Postfix, the first good session of a delivery is the one cached under the
        // next hop's name, even when it left recipients for the next server.
        let mut kept = false;
        if let Some(c) = self.cache.take() {
            if c.key == key
                && !c.session.broken
                && c.session.opened.elapsed() < self.s.reuse_time_limit
            {
                let mut session = c.session;
                let t0 = Instant::now();
                let attempt = self.transact(&mut session, msg, &rcpts, true);
                timing.1 = t0.elapsed();
                timing.2 = session.transactions;
                match attempt {
                    Ok(decided) if decided.iter().all(|d| d.outcome != Outcome::Deferred) => {
                        self.keep(key, session, c.addr);
                        return decided;
                    }
                    Ok(decided) => {
                        let left = decided
                            .iter()
                            .filter(|d| d.outcome == Outcome::Deferred)
                            .count();
                        for (k, d) in decided.into_iter().enumerate() {
                            if d.outcome == Outcome::Deferred {
                                soft[k] = Some(d);
                            } else {
                                finals[k] = Some(d);
                            }
                        }
                        oxipost_log::info!(
                            "{}: {left} recipient(s) left for the next server after {} (reused connection)",
                            req.queue_id,
                            session.relay
                        );
                        // Still the first good session of this delivery: kept.
                        self.keep(key.clone(), session, c.addr);
                        kept = true;
                        reused = Some(c.addr);
                    }
                    // The server closed the idle connection or refused RSET: open a
                    // new one below.
                    Err(_) => session.quit(),
                }
            } else {
                c.session.quit();
            }
        }

        // The next hop, then (SMTP only) smtp_fallback_relay, as Postfix's smtp_connect.
        let mut sites: Vec<(String, Nexthop)> = vec![(nexthop_text.clone(), nexthop)];
        if !self.s.lmtp {
            for f in &self.s.fallback_relay {
                match Nexthop::parse(f, default_port, false) {
                    Ok(h @ Nexthop::Inet { .. }) => sites.push((f.clone(), h)),
                    _ => oxipost_log::warning!("smtp_fallback_relay: bad destination {f}"),
                }
            }
        }
        let nsites = sites.len();
        // The last failure that left recipients without an answer, and from which site.
        let mut last: Option<(Decided, usize)> = None;
        let mut stop_all = false;
        for (si, (site_text, site)) in sites.iter().enumerate() {
            if stop_all || finals.iter().all(Option::is_some) {
                break;
            }
            let (level, matches) = self.tls_policy(site_text);
            let level = match level {
                TlsLevel::Dane => TlsLevel::May,
                TlsLevel::DaneOnly => TlsLevel::Encrypt,
                l => l,
            };
            let (mut targets, i_am_mx, site_host) = match site {
                Nexthop::Unix(p) => (
                    vec![Target {
                        name: p.display().to_string(),
                        addr: None,
                        unix: Some(p.clone()),
                        best: true,
                    }],
                    false,
                    String::new(),
                ),
                Nexthop::Inet { host, port, mx } => {
                    let dns: &dyn dest::Lookup = match &self.dns {
                        Ok(r) => r,
                        Err(e) => {
                            let d = Decided {
                                outcome: Outcome::Deferred,
                                dsn: "4.4.3".into(),
                                text: format!("Name service error: {e}"),
                                relay: "none".into(),
                            };
                            last = Some((d, si));
                            break;
                        }
                    };
                    let own =
                        (!self.s.lmtp && self.s.loop_ports.contains(port)).then_some(&self.s.own);
                    match dest::candidates(host, *port, *mx, &self.s, own, dns) {
                        Ok(sv) => (
                            sv.list
                                .into_iter()
                                .map(|c| Target {
                                    name: c.name,
                                    addr: Some(c.addr),
                                    unix: None,
                                    best: c.best,
                                })
                                .collect::<Vec<_>>(),
                            sv.i_am_mx,
                            host.clone(),
                        ),
                        Err(e) => {
                            oxipost_log::info!("{}: {}", req.queue_id, e.text);
                            // A loop is final: a fall-back relay would only make it worse.
                            let looped = e.dsn.ends_with(".4.6");
                            let d = Decided {
                                outcome: if e.permanent {
                                    Outcome::Bounced
                                } else {
                                    Outcome::Deferred
                                },
                                dsn: e.dsn,
                                text: e.text,
                                relay: "none".into(),
                            };
                            last = Some((d, si));
                            if looped {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            let mut sessions = 0usize;
            if si == 0
                && let Some(addr) = reused
            {
                // Postfix counts the reused session towards both limits.
                sessions = 1;
                targets.retain(|t| t.addr != addr);
                if self.s.mx_address_limit > 0 {
                    targets.truncate(self.s.mx_address_limit - 1);
                }
            }
            // Postfix's final next hop: the last site, or one this host is MX for.
            let final_site = i_am_mx || si + 1 == nsites;
            for (i, t) in targets.iter().enumerate() {
                let todo: Vec<usize> = (0..n).filter(|&k| finals[k].is_none()).collect();
                if todo.is_empty()
                    || (self.s.mx_session_limit > 0 && sessions >= self.s.mx_session_limit)
                {
                    break;
                }
                let credentials =
                    match self.credentials(site_text, &t.name, t.addr.map_or(0, |a| a.port())) {
                        Ok(c) => c,
                        Err(e) => return all(Outcome::Deferred, "4.3.0", e, "none"),
                    };
                let tls_names = self.tls_names(level, matches.as_deref(), &t.name, &site_host);
                let loop_check = match (t.addr, self.s.lmtp) {
                    (Some(a), false) if self.s.loop_ports.contains(&a.port()) => Some(LoopCheck {
                        myhostname: self.s.myhostname.clone(),
                        nexthop: site_text.clone(),
                        best: t.best,
                    }),
                    _ => None,
                };
                let mut plan = Plan {
                    name: t.name.clone(),
                    addr: t.addr,
                    unix: t.unix.as_deref(),
                    tls_level: level,
                    tls_names,
                    roots: self.roots.clone(),
                    credentials,
                    loop_check,
                };
                let mut opened = Session::open(&self.s, &plan);
                if let Err((Failure::TlsFallback(why), _, relay)) = &opened {
                    oxipost_log::info!("{relay}: {why}; retrying without TLS");
                    plan.tls_level = TlsLevel::None;
                    opened = Session::open(&self.s, &plan);
                }
                match opened {
                    Ok(mut session) => {
                        // Only sessions that completed the handshake count, as Postfix's.
                        sessions += 1;
                        let more = (i + 1 < targets.len()
                            && (self.s.mx_session_limit == 0
                                || sessions < self.s.mx_session_limit))
                            || !final_site;
                        timing.0 = start.elapsed();
                        let t0 = Instant::now();
                        let sub: Vec<RcptSpec> = todo.iter().map(|&k| rcpts[k].clone()).collect();
                        let attempt = self.transact(&mut session, msg, &sub, false);
                        timing.1 = t0.elapsed();
                        timing.2 = session.transactions;
                        let (decided, failure) = match attempt {
                            Ok(d) => (d.into_iter().map(Some).collect::<Vec<_>>(), None),
                            Err((f, partial)) => (partial, Some(f)),
                        };
                        let described = failure.as_ref().map(|f| {
                            let (dsn, perm, text) =
                                f.describe(&session.peer, self.s.skip_5xx_greeting);
                            Decided {
                                outcome: if perm {
                                    Outcome::Bounced
                                } else {
                                    Outcome::Deferred
                                },
                                dsn,
                                text,
                                relay: session.relay.clone(),
                            }
                        });
                        let next_ok = more && failure.as_ref().is_none_or(Failure::try_next);
                        let mut left = false;
                        for (j, d) in decided.into_iter().enumerate() {
                            let k = todo[j];
                            let d = match (d, &described) {
                                (Some(d), _) => d,
                                (None, Some(f)) => f.clone(),
                                (None, None) => continue,
                            };
                            if d.outcome == Outcome::Deferred && next_ok {
                                soft[k] = Some(d);
                                left = true;
                            } else {
                                finals[k] = Some(d);
                            }
                        }
                        if let Some(d) = described {
                            last = Some((
                                Decided {
                                    relay: "none".into(),
                                    ..d
                                },
                                si,
                            ));
                            session.quit();
                        } else if kept || si > 0 {
                            // Only the next hop's own sessions are cached under its name.
                            session.quit();
                        } else {
                            self.keep(key.clone(), session, t.addr);
                            kept = true;
                        }
                        if !next_ok {
                            stop_all = true;
                            break;
                        }
                        if left {
                            oxipost_log::info!(
                                "{}: {} recipient(s) left for the next server after {}",
                                req.queue_id,
                                soft.iter()
                                    .zip(&finals)
                                    .filter(|(s, f)| s.is_some() && f.is_none())
                                    .count(),
                                t.name
                            );
                        }
                    }
                    Err((f, peer, _relay)) => {
                        let (dsn, perm, text) = f.describe(&peer, self.s.skip_5xx_greeting);
                        oxipost_log::info!("{}: {text}", req.queue_id);
                        let d = Decided {
                            outcome: if perm {
                                Outcome::Bounced
                            } else {
                                Outcome::Deferred
                            },
                            dsn,
                            text,
                            relay: "none".into(),
                        };
                        last = Some((d, si));
                        if !f.try_next() {
                            stop_all = true;
                            break;
                        }
                    }
                }
            }
            if i_am_mx {
                break;
            }
        }
        if timing.0.is_zero() {
            timing.0 = start.elapsed();
        }
        let fallback = match last {
            // A hard error of the relayhost or of a fall-back relay is a configuration
            // problem: deferred (4.3.5), not bounced, as in Postfix.
            Some((mut d, si))
                if d.outcome == Outcome::Bounced
                    && !self.s.lmtp
                    && (si > 0
                        || (!self.s.relayhost.is_empty() && sites[0].0 == self.s.relayhost)) =>
            {
                let what = if si > 0 {
                    "smtp_fallback_relay"
                } else {
                    "relayhost"
                };
                oxipost_log::warning!("{what} configuration problem");
                d.outcome = Outcome::Deferred;
                d.dsn = "4.3.5".into();
                d
            }
            Some((d, _)) => d,
            None => Decided {
                outcome: Outcome::Deferred,
                dsn: "4.4.4".into(),
                text: format!("no server found for {nexthop_text}"),
                relay: "none".into(),
            },
        };
        finals
            .into_iter()
            .zip(soft)
            .map(|(f, s)| f.or(s).unwrap_or_else(|| fallback.clone()))
            .collect()
    }

    /// `smtp_generic_maps` on the sender and the message header (recipients are mapped
    /// with the request). A table error defers the message.
    fn generic_message(&self, mut m: Message) -> Result<Message, String> {
        let Some(g) = &self.s.generic else {
            return Ok(m);
        };
        let err = |e: String| format!("{}_generic_maps lookup error: {e}", self.s.prefix);
        m.mail.sender = g.map(&m.mail.sender).map_err(err)?;
        if let Some(c) = g.rewrite_headers(&m.content).map_err(err)? {
            m.content = c;
        }
        Ok(m)
    }

    fn keep(&mut self, key: String, session: Session, addr: Option<SocketAddr>) {
        let wanted = self.s.cache_on_demand
            || self
                .s
                .cache_destinations
                .iter()
                .any(|d| *d == key || key.trim_start_matches('[').split(']').next() == Some(d));
        if session.broken || !wanted || session.opened.elapsed() >= self.s.reuse_time_limit {
            session.quit();
            return;
        }
        self.cache = Some(Cached {
            key,
            session,
            addr,
            idle_since: Instant::now(),
        });
    }

    /// One transaction on an open session. `Err` carries the failure and what was
    /// decided before it (a reused session that failed before any decision is
    /// `Err` with nothing decided, and the caller opens a new one).
    #[allow(clippy::type_complexity)]
    fn transact(
        &self,
        session: &mut Session,
        msg: &Message,
        rcpts: &[RcptSpec],
        reused: bool,
    ) -> Result<Vec<Decided>, (Failure, Vec<Option<Decided>>)> {
        let n = rcpts.len();
        let relay = session.relay.clone();
        let peer = session.peer.clone();
        let local = |o: Outcome, dsn: &str, text: String| {
            vec![
                Decided {
                    outcome: o,
                    dsn: dsn.into(),
                    text,
                    relay: relay.clone(),
                };
                n
            ]
        };
        // Content for this server.
        let mut crlf = content::to_crlf(&msg.content);
        let mut eight = content::has_8bit(&crlf);
        if eight
            && !session.ext.eightbitmime
            && let Some(c) = content::downgrade_8bit(&crlf)
        {
            crlf = c;
            eight = false;
        }
        if !session.ext.size_ok(crlf.len() as u64) {
            return Ok(local(
                Outcome::Bounced,
                "5.3.4",
                format!(
                    "message size {} exceeds size limit {} of server {peer}",
                    crlf.len(),
                    session.ext.size.unwrap_or(0)
                ),
            ));
        }
        let needs_utf8 = !msg.mail.sender.is_ascii() || rcpts.iter().any(|r| !r.address.is_ascii());
        if msg.mail.smtputf8 && needs_utf8 && !session.ext.smtputf8 {
            return Ok(local(
                Outcome::Bounced,
                "5.6.7",
                format!("SMTPUTF8 is required, but was not offered by host {peer}"),
            ));
        }
        let mut mail = msg.mail.clone();
        mail.size = crlf.len() as u64;
        let opts = TxOptions {
            lmtp: self.s.lmtp,
            pipelining: true,
            chunking: true,
            rset_first: reused,
        };
        let mut tx = Transaction::new(&mail, rcpts, &session.ext, opts, eight);
        let mut payload = Payload {
            crlf,
            stuffed: None,
        };
        let run = session.run(&mut tx, &mut payload);
        let results = tx.results();
        let decided: Vec<Option<Decided>> = results
            .into_iter()
            .map(|r| {
                r.map(|r| {
                    let outcome = match r.reply.class() {
                        2 => Outcome::Delivered,
                        5 => Outcome::Bounced,
                        _ => Outcome::Deferred,
                    };
                    let text = if outcome == Outcome::Delivered {
                        r.reply.text()
                    } else {
                        format!(
                            "host {peer} said: {} ({})",
                            r.reply.text(),
                            r.stage.in_reply_to()
                        )
                    };
                    Decided {
                        outcome,
                        dsn: r.reply.dsn(),
                        text,
                        relay: relay.clone(),
                    }
                })
            })
            .collect();
        if reused && (tx.rset_failed() || (run.is_err() && decided.iter().all(Option::is_none))) {
            return Err((
                run.err()
                    .unwrap_or(Failure::Lost(oxipost_smtp_client_proto::Stage::Rset)),
                decided,
            ));
        }
        if let Err(f) = run {
            return Err((f, decided));
        }
        Ok(decided
            .into_iter()
            .map(|d| {
                d.unwrap_or_else(|| Decided {
                    outcome: Outcome::Deferred,
                    dsn: "4.4.2".into(),
                    text: format!("lost connection with {peer} while sending RCPT TO"),
                    relay: relay.clone(),
                })
            })
            .collect())
    }

    /// The TLS level and `match=` names for a destination: `smtp_tls_policy_maps`
    /// (the next hop as written, then the bare domain), else the global level.
    fn tls_policy(&self, nexthop: &str) -> (TlsLevel, Option<Vec<String>>) {
        if let Some(maps) = &self.s.tls_policy_maps {
            let bare = nexthop
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or(nexthop)
                .to_string();
            for key in [nexthop.to_string(), bare] {
                match maps.lookup(&key) {
                    Ok(Some(v)) => match TlsPolicy::parse(&v) {
                        Some(p) => return (p.level, p.matches),
                        None => {
                            oxipost_log::warning!("smtp_tls_policy_maps: bad policy for {key}: {v}")
                        }
                    },
                    Ok(None) => {}
                    Err(e) => {
                        // A table that cannot answer must not weaken security.
                        oxipost_log::warning!("smtp_tls_policy_maps: {e}");
                        return (TlsLevel::Encrypt, None);
                    }
                }
            }
        }
        (self.s.tls_level, None)
    }

    /// The names a certificate may match at `verify`/`secure`.
    fn tls_names(
        &self,
        level: TlsLevel,
        matches: Option<&[String]>,
        host: &str,
        nexthop: &str,
    ) -> Vec<String> {
        let strategies: Vec<String> = match matches {
            Some(m) => m.to_vec(),
            None if level == TlsLevel::Secure => self.s.tls_secure_cert_match.clone(),
            None => self.s.tls_verify_cert_match.clone(),
        };
        let mut out = Vec::new();
        for m in strategies {
            match m.as_str() {
                "hostname" => out.push(host.to_string()),
                "nexthop" | "dot-nexthop" => out.push(nexthop.to_string()),
                other => out.push(other.to_string()),
            }
        }
        out.dedup();
        out
    }

    fn credentials(
        &self,
        nexthop: &str,
        host: &str,
        port: u16,
    ) -> Result<Option<sasl::Credentials>, String> {
        if !self.s.sasl_enable {
            return Ok(None);
        }
        match &self.s.sasl_password_maps {
            Some(m) => sasl::lookup(m, nexthop, host, port),
            None => Ok(None),
        }
    }
}

fn arrival_delay(arrival: u64, received: SystemTime) -> Duration {
    if arrival == 0 {
        return Duration::ZERO;
    }
    received
        .duration_since(UNIX_EPOCH + Duration::from_secs(arrival))
        .unwrap_or(Duration::ZERO)
}

fn read_message(req: &DeliveryRequest) -> Result<Message, String> {
    let qf = QueueFile::open(&req.path)
        .map_err(|e| format!("cannot read queue file {}: {e}", req.path))?;
    let mut content = Vec::with_capacity(qf.content_len() as usize);
    qf.content()
        .read_to_end(&mut content)
        .map_err(|e| format!("error reading message: {e}"))?;
    let p = &qf.envelope().params;
    let mail = MailSpec {
        sender: req.sender.clone(),
        size: content.len() as u64,
        body: match p.body {
            Some(BodyType::EightBitMime) | Some(BodyType::BinaryMime) => Body::EightBitMime,
            Some(BodyType::SevenBit) => Body::SevenBit,
            None => Body::Unspecified,
        },
        smtputf8: p.smtputf8,
        ret: p.ret.map(|r| match r {
            Ret::Full => "FULL".to_string(),
            Ret::Hdrs => "HDRS".to_string(),
        }),
        envid: p.envid.clone(),
    };
    Ok(Message { mail, content })
}

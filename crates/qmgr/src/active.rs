//! The scheduler: messages move incoming -> active, their pending recipients are grouped
//! into delivery requests per (transport, next hop), requests run within the concurrency
//! limits, and when every request of a message has a reply the message is removed,
//! deferred with back-off, or bounced. All state changes on disk are renames or one-byte
//! done-marks, so a crash at any point leaves each message in a queue it is picked up from.

use crate::defer_log;
use crate::destination::DestState;
use crate::dispatch::{Dispatcher, Done, Job};
use crate::notify::{Notifier, RcptOutcome};
use crate::resolve::{Route, resolve_filtered};
use crate::settings::Settings;
use oxipost_ipc::{DeliveryReply, DeliveryRequest, Outcome, RcptRef, RcptResult};
use oxipost_queue::{Queue, QueueFile, QueueId, Recipient};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Most requests sent to one agent in one batch.
const BATCH_MAX: usize = 64;

/// What qmgr keeps of a message in the active queue. The file itself is not kept open:
/// the active queue may hold thousands of messages (`qmgr_message_active_limit`).
struct Message {
    id: QueueId,
    path: PathBuf,
    sender: String,
    arrival: SystemTime,
    recipients: Vec<Recipient>,
    pending_jobs: usize,
    /// Results of this attempt: (recipient index, status, text, relay).
    delivered: Vec<RcptOutcome>,
    deferred: Vec<RcptOutcome>,
    bounced: Vec<RcptOutcome>,
}

struct Pending {
    key: u64,
    message: String,
    route: Route,
    /// Concurrency is counted per destination: the next hop, or for one-recipient
    /// transports (local) the recipient itself, as Postfix does.
    destination: String,
    request: DeliveryRequest,
}

pub struct Scheduler {
    s: Settings,
    dispatcher: Dispatcher,
    messages: HashMap<String, Message>,
    /// Waiting requests indexed by (transport, destination), with each destination's
    /// concurrency window and dead mark (see [`crate::destination`]).
    dests: HashMap<(String, String), DestState<Pending>>,
    /// Destinations with waiting requests, round robin, each at most once: dispatch
    /// looks at these, never at every waiting request.
    ready: VecDeque<(String, String)>,
    /// The earliest time a rate-delayed destination may start again.
    next_wake: Option<Instant>,
    in_flight: HashMap<u64, Pending>,
    busy_transport: HashMap<String, usize>,
    next_key: u64,
    next_deferred_scan: Instant,
    /// Transports whose agent could not be reached, and until when to not try again
    /// (Postfix's transport_retry_time): their mail is deferred at once meanwhile.
    dead_until: HashMap<String, Instant>,
    /// The last incoming scan stopped at qmgr_message_active_limit.
    incoming_backlog: bool,
    /// qmgr itself queued mail (a notification) that incoming/ should be scanned for.
    new_mail: bool,
}

impl Scheduler {
    pub fn new(s: Settings) -> std::io::Result<Scheduler> {
        let dispatcher = Dispatcher::new(s.private_dir.clone(), s.ipc_timeout)?;
        Ok(Scheduler {
            next_deferred_scan: Instant::now() + s.queue_run_delay,
            s,
            dispatcher,
            messages: HashMap::new(),
            dests: HashMap::new(),
            ready: VecDeque::new(),
            next_wake: None,
            in_flight: HashMap::new(),
            busy_transport: HashMap::new(),
            next_key: 1,
            dead_until: HashMap::new(),
            incoming_backlog: false,
            new_mail: false,
        })
    }

    pub fn wake_fd(&self) -> std::os::fd::RawFd {
        self.dispatcher.wake_fd()
    }

    pub fn next_deadline(&self) -> Instant {
        match self.next_wake {
            Some(t) => t.min(self.next_deferred_scan),
            None => self.next_deferred_scan,
        }
    }

    /// The event loop's timer: a deferred-queue scan when due, else a rate-delayed
    /// destination may go on.
    pub fn timer(&mut self) {
        if Instant::now() >= self.next_deferred_scan {
            self.scan_deferred(false);
            self.scan_incoming();
        } else {
            self.dispatch();
        }
    }

    /// `postqueue -f`: dead destinations get another chance now, as Postfix's flush.
    pub fn revive_dead(&mut self) {
        for ((t, _), d) in self.dests.iter_mut() {
            if d.dead.is_some() {
                d.revive(&self.s.limits(t));
            }
        }
    }

    /// Forgets destinations with nothing to do whose failures are old (from the
    /// periodic deferred scan: the only walk over all destinations).
    fn sweep_destinations(&mut self) {
        let now = Instant::now();
        let memory = self.s.minimal_backoff;
        let s = &self.s;
        self.dests.retain(|(t, _), d| {
            if d.dead.is_some() {
                d.check_dead(&s.limits(t), now);
            }
            !d.idle(now, memory)
        });
    }

    /// Adds a request to its destination's queue.
    fn enqueue(&mut self, p: Pending) {
        let key = (p.route.transport.clone(), p.destination.clone());
        let d = match self.dests.get_mut(&key) {
            Some(d) => d,
            None => {
                let limits = self.s.limits(&key.0);
                self.dests
                    .entry(key.clone())
                    .or_insert(DestState::new(&limits))
            }
        };
        d.pending.push_back(p);
        if !d.listed {
            d.listed = true;
            self.ready.push_back(key);
        }
    }

    /// After a crash, messages in active/ are taken up again; their done-marks make sure
    /// delivered recipients are not delivered twice (unless the crash came between a
    /// delivery and its mark).
    pub fn recover(&mut self) {
        match self.s.layout.list(Queue::Active) {
            Ok(entries) => {
                for e in entries {
                    self.load(e.id, Queue::Active);
                }
            }
            Err(e) => oxipost_log::warning!("scan active queue: {e}"),
        }
        self.dispatch();
    }

    /// New mail: move what fits from incoming/ to active/; again while doing so made
    /// qmgr queue notifications of its own.
    pub fn scan_incoming(&mut self) {
        self.new_mail = false;
        self.scan_incoming_once();
        for _ in 0..8 {
            if !std::mem::take(&mut self.new_mail) {
                break;
            }
            self.scan_incoming_once();
        }
    }

    fn scan_incoming_once(&mut self) {
        let entries = match self.s.layout.list(Queue::Incoming) {
            Ok(e) => e,
            Err(e) => {
                oxipost_log::warning!("scan incoming queue: {e}");
                return;
            }
        };
        self.incoming_backlog = false;
        for e in entries {
            if self.messages.len() >= self.s.active_limit {
                self.incoming_backlog = true;
                break;
            }
            if self.messages.contains_key(e.id.as_str()) {
                continue;
            }
            match self
                .s
                .layout
                .move_unsynced(&e.id, Queue::Incoming, Queue::Active)
            {
                Ok(_) => self.load(e.id, Queue::Active),
                Err(err) => oxipost_log::warning!("{}: move to active: {}", e.id.as_str(), err),
            }
        }
        self.dispatch();
    }

    /// Deferred mail whose time has come (all of it when `flush`).
    pub fn scan_deferred(&mut self, flush: bool) {
        self.next_deferred_scan = Instant::now() + self.s.queue_run_delay;
        self.sweep_destinations();
        // Temporary files of writers that died (a killed smtpd) are never a message:
        // nothing was acknowledged for them. Remove them once surely abandoned.
        if let Ok(n) = self
            .s
            .layout
            .remove_stale_temp(Queue::Incoming, STALE_TEMP_AGE)
            && n > 0
        {
            oxipost_log::info!("removed {n} abandoned temporary file(s) from incoming");
        }
        let entries = match self.s.layout.list(Queue::Deferred) {
            Ok(e) => e,
            Err(e) => {
                oxipost_log::warning!("scan deferred queue: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        for e in entries {
            if self.messages.len() >= self.s.active_limit {
                break;
            }
            let due = flush
                || self
                    .s
                    .layout
                    .next_attempt(Queue::Deferred, &e.id)
                    .map(|t| t <= now)
                    .unwrap_or(true);
            if !due {
                continue;
            }
            match self
                .s
                .layout
                .move_unsynced(&e.id, Queue::Deferred, Queue::Active)
            {
                Ok(_) => self.load(e.id, Queue::Active),
                Err(err) => oxipost_log::warning!("{}: move to active: {}", e.id.as_str(), err),
            }
        }
        self.dispatch();
    }

    fn load(&mut self, id: QueueId, queue: Queue) {
        let path = self.s.layout.path_for(queue, &id);
        let file = match QueueFile::open(&path) {
            Ok(f) => f,
            Err(e) => {
                oxipost_log::warning!("{}: {}: moving to corrupt queue", id.as_str(), e);
                if let Err(e2) = self.s.layout.move_to(&id, queue, Queue::Corrupt) {
                    oxipost_log::warning!("{}: move to corrupt: {}", id.as_str(), e2);
                }
                return;
            }
        };
        let qid = id.as_str().to_string();
        oxipost_log::info!(
            "{}: from=<{}>, size={}, nrcpt={} (queue active)",
            qid,
            file.sender(),
            file.content_len(),
            file.recipients().len()
        );
        // Group pending recipients by route, then split by the recipient limit.
        let mut groups: Vec<(Route, Vec<RcptRef>)> = Vec::new();
        let filter = file
            .envelope()
            .attributes
            .iter()
            .rev()
            .find(|a| a.name == "filter")
            .map(|a| a.value.clone());
        let redirect = file
            .envelope()
            .attributes
            .iter()
            .rev()
            .find(|a| a.name == "redirect")
            .map(|a| a.value.clone());
        for i in file.pending() {
            let r = &file.recipients()[i];
            let (address, orcpt) =
                crate::resolve::redirected(&r.address, r.orcpt.as_deref(), redirect.as_deref());
            let route = resolve_filtered(&self.s, &address, filter.as_deref());
            let rref = RcptRef {
                index: i as u32,
                address,
                orcpt,
                notify: (!r.notify.is_unspecified()).then(|| r.notify.to_string()),
            };
            match groups.iter_mut().find(|(g, _)| *g == route) {
                Some((_, v)) => v.push(rref),
                None => groups.push((route, vec![rref])),
            }
        }
        let attributes: Vec<(String, String)> = file
            .envelope()
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect();
        let arrival = file
            .arrival()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jobs = 0;
        for (route, rcpts) in groups {
            let limit = self.s.limits(&route.transport).destination_recipients;
            for chunk in rcpts.chunks(limit) {
                let destination = if limit == 1 {
                    chunk[0].address.to_ascii_lowercase()
                } else {
                    route.nexthop.to_ascii_lowercase()
                };
                let key = self.next_key;
                self.next_key += 1;
                self.enqueue(Pending {
                    key,
                    message: qid.clone(),
                    destination,
                    request: DeliveryRequest {
                        queue_id: qid.clone(),
                        path: path.to_string_lossy().into_owned(),
                        content_offset: 0,
                        content_length: file.content_len(),
                        sender: file.sender().to_string(),
                        transport: route.transport.clone(),
                        nexthop: route.nexthop.clone(),
                        recipients: chunk.to_vec(),
                        attributes: attributes.clone(),
                        arrival,
                    },
                    route: route.clone(),
                });
                jobs += 1;
            }
        }
        self.messages.insert(
            qid.clone(),
            Message {
                id,
                path,
                sender: file.sender().to_string(),
                arrival: file.arrival(),
                recipients: file.recipients().to_vec(),
                pending_jobs: jobs,
                delivered: Vec::new(),
                deferred: Vec::new(),
                bounced: Vec::new(),
            },
        );
        if jobs == 0 {
            self.finish(&qid);
        }
    }

    /// Starts every waiting request that the limits allow, destination by destination
    /// (round robin over the destinations with work, never a scan of all requests).
    /// Requests waiting for the same destination go out together as batches (the backlog
    /// shared among the free slots, up to [`BATCH_MAX`] each): while a destination is at
    /// its concurrency window its backlog grows, and the next free slot takes its share,
    /// so the agent can make the whole batch durable with one round of syncs (smtp: send
    /// it over one connection). Batching
    /// thus appears exactly when load makes it pay. A dead destination's requests are
    /// deferred at once without an attempt.
    pub fn dispatch(&mut self) {
        let now = Instant::now();
        self.dead_until.retain(|_, until| *until > now);
        self.next_wake = None;
        let mut unavailable = Vec::new();
        let mut suspended: Vec<(Pending, String, String)> = Vec::new();
        let mut gone = Vec::new();
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(d) = self.dests.get_mut(&key) else {
                continue;
            };
            if self.dead_until.contains_key(&key.0) {
                unavailable.extend(d.pending.drain(..));
                d.listed = false;
                continue;
            }
            let limits = self.s.limits(&key.0);
            if d.check_dead(&limits, now) {
                if let Some(dead) = d.dead.clone() {
                    let why = format!("delivery temporarily suspended: {}", dead.reason);
                    suspended.extend(
                        d.pending
                            .drain(..)
                            .map(|p| (p, dead.dsn.clone(), why.clone())),
                    );
                }
                d.listed = false;
                continue;
            }
            let t_busy = self.busy_transport.entry(key.0.clone()).or_default();
            while !d.pending.is_empty()
                && *t_busy < limits.process_limit
                && d.may_start(&limits, now)
            {
                // The backlog is shared among the slots free now, so a moderate backlog
                // still runs in parallel; a large one goes in batches of BATCH_MAX.
                let slots = d.free(&limits).min(limits.process_limit - *t_busy).max(1);
                let max = if limits.rate_delay.is_zero() {
                    d.pending.len().div_ceil(slots).clamp(1, BATCH_MAX)
                } else {
                    1
                };
                let n = d.pending.len().min(max);
                let batch: Vec<Pending> = d.pending.drain(..n).collect();
                let job = Job {
                    keys: batch.iter().map(|p| p.key).collect(),
                    requests: batch.iter().map(|p| p.request.clone()).collect(),
                };
                self.dispatcher
                    .send(&key.0, limits.process_limit, *t_busy, job);
                *t_busy += 1;
                d.busy += 1;
                if !limits.rate_delay.is_zero() {
                    // Spacing counts from the start; completion pushes it further.
                    d.next_start = Some(now + limits.rate_delay);
                }
                for p in batch {
                    self.in_flight.insert(p.key, p);
                }
            }
            if d.busy == 0
                && !d.pending.is_empty()
                && let Some(t) = d.next_start.filter(|t| *t > now)
            {
                self.next_wake = Some(self.next_wake.map_or(t, |w| w.min(t)));
            }
            if d.pending.is_empty() {
                d.listed = false;
                if d.idle(now, self.s.minimal_backoff) {
                    gone.push(key);
                }
            } else {
                self.ready.push_back(key);
            }
        }
        for k in gone {
            self.dests.remove(&k);
        }
        for p in unavailable {
            let key = p.key;
            self.in_flight.insert(key, p);
            self.apply(key, Err("mail transport unavailable".into()));
        }
        for (p, dsn, why) in suspended {
            self.defer_now(p, &dsn, &why);
        }
    }

    /// Defers a request without an attempt, logged as Postfix's qmgr does.
    fn defer_now(&mut self, p: Pending, dsn: &str, text: &str) {
        let key = p.key;
        let delay = self
            .messages
            .get(&p.message)
            .and_then(|m| SystemTime::now().duration_since(m.arrival).ok())
            .unwrap_or(Duration::ZERO);
        let results = p
            .request
            .recipients
            .iter()
            .map(|r| {
                oxipost_log::info!(
                    "{}: to=<{}>, relay=none, delay={:.1}, dsn={dsn}, status=deferred ({text})",
                    p.message,
                    r.address,
                    delay.as_secs_f64()
                );
                RcptResult {
                    index: r.index,
                    outcome: Outcome::Deferred,
                    status: dsn.to_string(),
                    text: text.to_string(),
                    relay: "none".into(),
                }
            })
            .collect();
        self.in_flight.insert(key, p);
        self.apply(key, Ok(DeliveryReply { results }));
    }

    /// Replies from agents.
    pub fn collect(&mut self) {
        // Free the slots and start the next requests first: settling the results
        // (renames, unlinks, notices) of many replies takes a while, and the agents
        // should not sit idle meanwhile.
        // Answers that come in meanwhile are released between two settlements.
        let mut queue = VecDeque::new();
        loop {
            let new = self.dispatcher.take_done();
            if !new.is_empty() {
                for done in &new {
                    self.release(done);
                }
                self.dispatch();
                queue.extend(new);
            }
            let Some(done) = queue.pop_front() else {
                break;
            };
            self.settle(done);
        }
        self.dispatch();
        // Freed active slots may admit new mail that the last scan had to leave behind,
        // and notifications queued just now wait in incoming/.
        if (self.incoming_backlog || self.new_mail) && self.messages.len() < self.s.active_limit {
            self.scan_incoming();
        }
    }

    /// One agent answer (for one request or a batch): frees its concurrency slot once and
    /// gives the destination its feedback.
    fn release(&mut self, done: &Done) {
        if let Some(p) = done.keys.first().and_then(|k| self.in_flight.get(k)) {
            let dkey = (p.route.transport.clone(), p.destination.clone());
            if let Some(n) = self.busy_transport.get_mut(&dkey.0) {
                *n = n.saturating_sub(1);
            }
            let limits = self.s.limits(&dkey.0);
            if let Some(d) = self.dests.get_mut(&dkey) {
                let now = Instant::now();
                match site_failure(&limits, done) {
                    Some((dsn, text))
                        if d.negative(&limits, now, self.s.minimal_backoff, dsn, text) =>
                    {
                        oxipost_log::info!(
                            "{}: destination {} marked dead: {text}",
                            dkey.0,
                            dkey.1
                        );
                    }
                    Some(_) => {}
                    None if !done.unavailable => {
                        for r in &done.results {
                            if r.is_ok() {
                                d.positive(&limits);
                            }
                        }
                    }
                    None => {}
                }
                d.busy = d.busy.saturating_sub(1);
                if !limits.rate_delay.is_zero() {
                    d.next_start = Some(now + limits.rate_delay);
                }
                if d.idle(now, self.s.minimal_backoff) {
                    self.dests.remove(&dkey);
                }
            }
        }
        if done.unavailable {
            if let Some(Err(e)) = done.results.first() {
                oxipost_log::warning!(
                    "transport {}: {e}: delivery temporarily suspended",
                    done.transport
                );
            }
            self.dead_until.insert(
                done.transport.clone(),
                Instant::now() + self.s.transport_retry_time,
            );
        }
    }

    /// Applies each request's results of a released answer.
    fn settle(&mut self, done: Done) {
        let mut results = done.results.into_iter();
        for key in done.keys {
            let r = results
                .next()
                .unwrap_or_else(|| Err("no reply from delivery agent".into()));
            self.apply(key, r);
        }
    }

    fn apply(&mut self, key: u64, result: Result<DeliveryReply, String>) {
        let Some(p) = self.in_flight.remove(&key) else {
            return;
        };
        let Some(msg) = self.messages.get_mut(&p.message) else {
            return;
        };
        let qid = p.message.clone();
        let mut answered = vec![false; p.request.recipients.len()];
        if let Ok(reply) = result {
            for r in reply.results {
                let Some(pos) = p.request.recipients.iter().position(|x| x.index == r.index) else {
                    continue;
                };
                answered[pos] = true;
                let idx = r.index as usize;
                let o = (idx, r.status, r.text, r.relay);
                match r.outcome {
                    Outcome::Delivered => msg.delivered.push(o),
                    Outcome::Deferred => msg.deferred.push(o),
                    Outcome::Bounced => msg.bounced.push(o),
                }
            }
        }
        for (pos, ok) in answered.iter().enumerate() {
            if !ok {
                let r = &p.request.recipients[pos];
                oxipost_log::info!(
                    "{qid}: to=<{}>, relay=none, dsn=4.3.0, status=deferred (mail transport unavailable)",
                    r.address
                );
                msg.deferred.push((
                    r.index as usize,
                    "4.3.0".into(),
                    "mail transport unavailable".into(),
                    "none".into(),
                ));
            }
        }
        msg.pending_jobs = msg.pending_jobs.saturating_sub(1);
        if msg.pending_jobs == 0 {
            self.finish(&qid);
        }
    }

    /// Every request of a message has an answer: notify, then defer or remove it.
    fn finish(&mut self, qid: &str) {
        let Some(mut msg) = self.messages.remove(qid) else {
            return;
        };
        let age = SystemTime::now()
            .duration_since(msg.arrival)
            .unwrap_or(Duration::ZERO);
        let lifetime = if msg.sender.is_empty() {
            self.s.bounce_queue_lifetime
        } else {
            self.s.maximal_queue_lifetime
        };
        if !msg.deferred.is_empty() && age >= lifetime {
            // Too old: what is still deferred now bounces, with its last reason.
            for (i, status, text, relay) in std::mem::take(&mut msg.deferred) {
                let status = format!("5{}", status.get(1..).unwrap_or(".4.7"));
                let addr = msg.recipients[i].address.clone();
                oxipost_log::info!(
                    "{qid}: to=<{addr}>, relay=none, dsn={status}, status=expired, returned to sender ({text})"
                );
                msg.bounced.push((i, status, text, relay));
            }
        }
        if !msg.bounced.is_empty() {
            self.send_bounce(qid, &mut msg);
        }
        if !msg.delivered.is_empty() {
            let n = self.notifier(qid, &msg);
            if n.success(&msg.delivered) {
                self.new_mail = true;
            }
        }
        if !msg.deferred.is_empty() {
            // Partly delivered: record what is final so the next attempt skips it.
            let mut finals: Vec<usize> = msg.delivered.iter().map(|o| o.0).collect();
            finals.extend(msg.bounced.iter().map(|o| o.0));
            if !finals.is_empty() {
                let r = QueueFile::open_for_update(&msg.path)
                    .and_then(|mut f| f.mark_done_many(&finals, true));
                if let Err(e) = r {
                    oxipost_log::warning!("{qid}: mark recipients done: {e}");
                }
            }
            self.record_deferral(qid, &msg, age);
            let backoff = age.clamp(
                self.s.minimal_backoff,
                self.s.maximal_backoff.max(self.s.minimal_backoff),
            );
            let next = SystemTime::now() + backoff;
            match self
                .s
                .layout
                .move_unsynced(&msg.id, Queue::Active, Queue::Deferred)
            {
                Ok(_) => {
                    if let Err(e) = self
                        .s
                        .layout
                        .set_next_attempt(Queue::Deferred, &msg.id, next)
                    {
                        oxipost_log::warning!("{qid}: set next attempt time: {e}");
                    }
                }
                Err(e) => oxipost_log::warning!("{qid}: move to deferred: {e}"),
            }
            return;
        }
        defer_log::remove(&self.s.layout, &msg.id);
        match self.s.layout.remove(Queue::Active, &msg.id) {
            Ok(_) => oxipost_log::info!("{qid}: removed"),
            Err(e) => oxipost_log::warning!("{qid}: remove: {e}"),
        }
    }

    fn notifier<'a>(&'a self, qid: &'a str, msg: &'a Message) -> Notifier<'a> {
        Notifier {
            s: &self.s,
            qid,
            path: &msg.path,
            sender: &msg.sender,
            recipients: &msg.recipients,
        }
    }

    /// The defer log (so `mailq` shows why) and, once per message after
    /// `delay_warning_time`, the delay warning.
    fn record_deferral(&mut self, qid: &str, msg: &Message, age: Duration) {
        // notify_classes resource/software: the postmaster hears of such deferrals.
        match self.notifier(qid, msg).trouble(&msg.deferred) {
            Ok(queued) => self.new_mail |= queued,
            Err(e) => oxipost_log::warning!("{qid}: cannot queue postmaster notice: {e}"),
        }
        let mut warned = defer_log::warned(&self.s.layout, &msg.id);
        let warn_after = self.s.notify.delay_warning_time;
        if warned.is_none() && !warn_after.is_zero() && age >= warn_after {
            match self.notifier(qid, msg).delay(&msg.deferred, age) {
                Ok(queued) => {
                    self.new_mail |= queued;
                    warned = Some(defer_log::now_secs());
                }
                Err(e) => oxipost_log::warning!("{qid}: cannot queue delay notification: {e}"),
            }
        }
        let entries: Vec<defer_log::Entry> = msg
            .deferred
            .iter()
            .map(|(i, status, text, _)| {
                let r = &msg.recipients[*i];
                defer_log::Entry {
                    address: &r.address,
                    index: *i,
                    orcpt: r.orcpt.as_deref(),
                    notify: r.notify.0,
                    status,
                    reason: text,
                }
            })
            .collect();
        if let Err(e) = defer_log::write(
            &self.s.layout,
            &msg.id,
            &defer_log::render(&entries, warned),
        ) {
            oxipost_log::warning!("{qid}: write defer log: {e}");
        }
    }

    /// Queues the notifications for `msg.bounced`; on failure those recipients move to
    /// `deferred` so the notice is retried with the message.
    fn send_bounce(&mut self, qid: &str, msg: &mut Message) {
        let bounced = std::mem::take(&mut msg.bounced);
        let r = self.notifier(qid, msg).failure(&bounced);
        match r {
            Ok(queued) => {
                self.new_mail |= queued;
                // Final now; marked on disk by finish() if the message stays queued.
                msg.bounced = bounced;
            }
            Err(e) => {
                // Keep the recipients pending: the notice is retried with the message.
                oxipost_log::warning!("{qid}: cannot queue bounce: {e}");
                msg.deferred.extend(bounced);
            }
        }
    }
}

/// The destination itself failed (connection, greeting, handshake): the agent deferred
/// every recipient of the job's first request without reaching a server. Returns the
/// DSN and text for the dead mark.
fn site_failure<'a>(
    limits: &crate::settings::TransportLimits,
    done: &'a Done,
) -> Option<(&'a str, &'a str)> {
    if !limits.site_feedback || done.unavailable {
        return None;
    }
    let Some(Ok(reply)) = done.results.first() else {
        return None;
    };
    let first = reply.results.first()?;
    // 4.3.0 (a queue file or table error) and 4.3.5 (a bad next hop) are the agent's own
    // trouble, not the destination's.
    reply
        .results
        .iter()
        .all(|r| {
            r.outcome == Outcome::Deferred
                && r.relay == "none"
                && !matches!(r.status.as_str(), "4.3.0" | "4.3.5")
        })
        .then_some((first.status.as_str(), first.text.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Feedback, TransportLimits};

    fn done(results: Vec<(Outcome, &str, &str)>) -> Done {
        Done {
            keys: vec![1],
            transport: "smtp".into(),
            results: vec![Ok(DeliveryReply {
                results: results
                    .into_iter()
                    .enumerate()
                    .map(|(i, (outcome, status, relay))| RcptResult {
                        index: i as u32,
                        outcome,
                        status: status.into(),
                        text: "connect to x[1.2.3.4]:25: Connection refused".into(),
                        relay: relay.into(),
                    })
                    .collect(),
            })],
            unavailable: false,
        }
    }

    #[test]
    fn site_failure_is_every_recipient_deferred_without_a_server() {
        let mut l = TransportLimits {
            process_limit: 10,
            destination_concurrency: 20,
            destination_recipients: 50,
            initial_concurrency: 5,
            failed_cohort_limit: 1,
            positive_feedback: Feedback::Fixed(1.0),
            negative_feedback: Feedback::Fixed(1.0),
            rate_delay: Duration::ZERO,
            site_feedback: true,
        };
        let d = Outcome::Deferred;
        let refused = done(vec![(d, "4.4.1", "none"), (d, "4.4.1", "none")]);
        assert_eq!(site_failure(&l, &refused).map(|x| x.0), Some("4.4.1"));
        // One recipient reached a server: recipient-level answers.
        let mixed = done(vec![(d, "4.4.1", "none"), (d, "4.2.0", "mx[1.2.3.4]:25")]);
        assert!(site_failure(&l, &mixed).is_none());
        // The agent's own trouble (queue file, table, next hop) is not the site's.
        assert!(site_failure(&l, &done(vec![(d, "4.3.0", "none")])).is_none());
        assert!(site_failure(&l, &done(vec![(d, "4.3.5", "none")])).is_none());
        assert!(site_failure(&l, &done(vec![(Outcome::Bounced, "5.1.10", "none")])).is_none());
        // Agents other than smtp/lmtp give no site feedback.
        l.site_feedback = false;
        assert!(site_failure(&l, &refused).is_none());
    }
}

//! One delivery request from qmgr: read the queue file, decide per recipient (loop check,
//! resolution, which mailbox), deliver with the recipient's rights, and answer with one
//! result per recipient.
//!
//! Mailbox choice follows Postfix's order: `mailbox_command`, then `home_mailbox` (ending in
//! `/`: a Maildir under the home directory, else an mbox file there), then an mbox named
//! after the user in `mail_spool_directory`. Each delivery prepends `Return-Path:`,
//! `X-Original-To:` and `Delivered-To:` as Postfix does. Maildir deliveries of one request
//! that run with the same rights share one [`MaildirBatch`], so several recipients cost one
//! directory fsync per Maildir. A full disk, a quota or a size limit defers; nothing is
//! reported delivered before it is durable.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oxipost_ipc::{DeliveryRequest, Outcome, RcptResult};
use oxipost_mailbox::{
    DeliverOptions, Maildir, MaildirBatch, MboxOptions, count_delivered_to, deliver_mbox,
    delivered_to_header, from_line, original_to_header, return_path_header,
};
use oxipost_queue::{Layout, QueueFile};

use crate::aliasdb;
use crate::command::{self, Invocation};
use crate::expand::{self, LeafKind};
use crate::privs::{self, Identity};
use crate::reinject;
use crate::resolve::{self, Address, UserInfo};
use crate::settings::Settings;

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Maildir(PathBuf),
    /// `spool`: in `mail_spool_directory` (created with the spool's rights, dot-lock may fail).
    Mbox {
        path: PathBuf,
        spool: bool,
    },
    Command(String),
    /// A `/file` from an alias, `.forward` or include (mbox format; a trailing `/`: Maildir).
    File(PathBuf),
    /// Remote addresses of an expansion, queued again with this envelope sender.
    Forward {
        sender: String,
        recipients: Vec<String>,
    },
}

/// Postfix's mailbox choice for a user.
pub fn choose_target(s: &Settings, user: &UserInfo) -> Target {
    if !s.mailbox_command.trim().is_empty() {
        return Target::Command(s.mailbox_command.trim().to_string());
    }
    let hm = s.home_mailbox.trim();
    if hm.ends_with('/') {
        Target::Maildir(user.home.join(hm))
    } else if !hm.is_empty() {
        Target::Mbox {
            path: user.home.join(hm),
            spool: false,
        }
    } else {
        Target::Mbox {
            path: s.mail_spool_directory.join(&user.name),
            spool: true,
        }
    }
}

/// True when the message header already carries `Delivered-To: <address>`.
pub fn is_loop(header: &[u8], address: &str) -> bool {
    count_delivered_to(header, address) > 0
}

/// One delivery of a recipient (a recipient expands to one or more).
#[derive(Debug, Clone)]
struct Job {
    /// Position in the request.
    pos: usize,
    index: u32,
    /// The recipient as the request names it (headers and the command environment).
    addr: Address,
    orig: String,
    /// Whose mailbox, or whose rights a command or file runs with.
    user: UserInfo,
    target: Target,
    /// The envelope sender (`Return-Path:`); an `owner-` alias changes it.
    sender: String,
}

fn result(index: u32, outcome: Outcome, dsn: &str, text: impl Into<String>) -> RcptResult {
    RcptResult {
        index,
        outcome,
        status: dsn.to_string(),
        text: text.into(),
        relay: "local".to_string(),
    }
}

fn outcome_of(temporary: bool) -> Outcome {
    if temporary {
        Outcome::Deferred
    } else {
        Outcome::Bounced
    }
}

/// A request after resolution: results already decided (bounces, deferrals) and the jobs
/// still to deliver, grouped by the rights they run with.
struct Plan<'a> {
    req: &'a DeliveryRequest,
    qf: Option<QueueFile>,
    /// Per recipient: the results of its deliveries so far (one, or one per leaf of an
    /// expansion); combined by [`combine`].
    parts: Vec<Vec<RcptResult>>,
    groups: BTreeMap<Identity, Vec<Job>>,
}

fn plan<'a>(s: &Settings, req: &'a DeliveryRequest, sources: &expand::Sources) -> Plan<'a> {
    let mut p = Plan {
        req,
        qf: None,
        parts: vec![Vec::new(); req.recipients.len()],
        groups: BTreeMap::new(),
    };
    let defer_all = |p: &mut Plan, text: String| {
        for (pos, r) in req.recipients.iter().enumerate() {
            p.parts[pos].push(result(r.index, Outcome::Deferred, "4.3.0", text.clone()));
        }
    };
    let qf = match QueueFile::open(&req.path) {
        Ok(qf) => qf,
        Err(e) => {
            defer_all(&mut p, format!("cannot read queue file {}: {e}", req.path));
            return p;
        }
    };
    let header = match read_header(&qf, s.header_size_limit) {
        Ok(h) => h,
        Err(e) => {
            defer_all(&mut p, format!("error reading message: {e}"));
            return p;
        }
    };
    p.qf = Some(qf);
    for (pos, rcpt) in req.recipients.iter().enumerate() {
        if is_loop(&header, &rcpt.address) {
            p.parts[pos].push(result(
                rcpt.index,
                Outcome::Bounced,
                "5.4.6",
                format!("mail forwarding loop for {}", rcpt.address),
            ));
            continue;
        }
        let addr = Address::parse(&rcpt.address, s);
        if let Some(domain) = addr.domain.as_deref()
            && !s.is_local_domain(domain)
        {
            // qmgr sends only mydestination recipients here; keep anything else queued.
            p.parts[pos].push(result(
                rcpt.index,
                Outcome::Deferred,
                "4.3.5",
                format!("mail for {domain} is not local: the domain is not in mydestination"),
            ));
            continue;
        }
        let orig = resolve::original_recipient(&rcpt.address, rcpt.orcpt.as_deref());
        let mut forwards: Vec<(String, Vec<String>)> = Vec::new();
        let mut jobs = Vec::new();
        for leaf in expand::expand(s, sources, &addr, &req.sender) {
            let (user, target) = match leaf.kind {
                LeafKind::Mailbox(user) => {
                    let target = choose_target(s, &user);
                    (user, target)
                }
                LeafKind::Command { command, rights } => (rights, Target::Command(command)),
                LeafKind::File { path, rights } => (rights, Target::File(path)),
                LeafKind::Forward(address) => {
                    match forwards.iter_mut().find(|(snd, _)| *snd == leaf.sender) {
                        Some((_, v)) => v.push(address),
                        None => forwards.push((leaf.sender, vec![address])),
                    }
                    continue;
                }
                LeafKind::Discard(text) => {
                    p.parts[pos].push(result(rcpt.index, Outcome::Delivered, "2.0.0", text));
                    continue;
                }
                LeafKind::Failed {
                    temporary,
                    dsn,
                    text,
                } => {
                    p.parts[pos].push(result(rcpt.index, outcome_of(temporary), dsn, text));
                    continue;
                }
            };
            jobs.push(Job {
                pos,
                index: rcpt.index,
                addr: addr.clone(),
                orig: orig.clone(),
                user,
                target,
                sender: leaf.sender,
            });
        }
        for (sender, recipients) in forwards {
            match aliasdb::current_user().and_then(|me| forwarder(s, me)) {
                Ok(user) => jobs.push(Job {
                    pos,
                    index: rcpt.index,
                    addr: addr.clone(),
                    orig: orig.clone(),
                    user,
                    target: Target::Forward { sender, recipients },
                    sender: req.sender.clone(),
                }),
                Err(text) => {
                    p.parts[pos].push(result(rcpt.index, Outcome::Deferred, "4.3.0", text));
                }
            }
        }
        for job in jobs {
            match identity_for(s, &job) {
                Ok(id) => p.groups.entry(id).or_default().push(job),
                Err(text) => {
                    p.parts[pos].push(result(rcpt.index, Outcome::Deferred, "4.3.0", text));
                }
            }
        }
    }
    p
}

/// Whose rights forwarded mail is queued with: `mail_owner` when local runs as root (the
/// queue belongs to it), else this process's own user.
fn forwarder(s: &Settings, me: UserInfo) -> Result<UserInfo, String> {
    if !privs::privileged() {
        return Ok(me);
    }
    resolve::system_user(&s.mail_owner)?
        .ok_or_else(|| format!("mail_owner {} does not exist", s.mail_owner))
}

/// One result for a recipient from the results of its deliveries: any deferral defers it
/// (it is retried whole, as Postfix does), else any bounce bounces it, else it is
/// delivered. Several deliveries are summarised in one text.
fn combine(index: u32, mut parts: Vec<RcptResult>) -> RcptResult {
    if parts.len() == 1
        && let Some(r) = parts.pop()
    {
        return r;
    }
    if parts.is_empty() {
        return result(
            index,
            Outcome::Deferred,
            "4.3.0",
            "internal error: no delivery result",
        );
    }
    for want in [Outcome::Deferred, Outcome::Bounced] {
        if let Some(r) = parts.iter().find(|r| r.outcome == want) {
            return r.clone();
        }
    }
    let mut texts: Vec<&str> = Vec::new();
    for r in &parts {
        if !texts.contains(&r.text.as_str()) {
            texts.push(&r.text);
        }
    }
    result(
        index,
        Outcome::Delivered,
        "2.0.0",
        format!("alias expansion: {}", texts.join("; ")),
    )
}

/// Delivers several requests together: all jobs that run with the same rights share one
/// process switch and one [`MaildirBatch`], so a batch of messages to one Maildir costs one
/// round of parallel file syncs and one directory sync. One result list per request, each
/// in request order.
pub fn deliver_batch(s: &Settings, reqs: &[DeliveryRequest]) -> Vec<Vec<RcptResult>> {
    // A batch is usually many messages to the same few users: look each user up and read
    // each `.forward` once per batch (a read as the user is a fork), not once per message.
    type FileKey = (PathBuf, u32, u32);
    let users: RefCell<HashMap<String, Result<Option<UserInfo>, String>>> = RefCell::default();
    let files: RefCell<HashMap<FileKey, expand::FileText>> = RefCell::default();
    let alias = |name: &str| s.aliases.lookup(name);
    let rights = || s.aliases.rights(&s.default_privs);
    let read = |path: &Path, user: &UserInfo| {
        let key = (path.to_path_buf(), user.uid, user.gid);
        if let Some(t) = files.borrow().get(&key) {
            return t.clone();
        }
        let t = privs::read_as(&Identity::user(user.uid, user.gid), path);
        files.borrow_mut().insert(key, t.clone());
        t
    };
    let user = |name: &str| {
        if let Some(u) = users.borrow().get(name) {
            return u.clone();
        }
        let u = resolve::lookup_user(name, s, resolve::system_user);
        users.borrow_mut().insert(name.to_string(), u.clone());
        u
    };
    let sources = expand::Sources {
        alias: &alias,
        user: &user,
        read: &read,
        alias_rights: &rights,
    };
    let mut plans: Vec<Plan> = reqs.iter().map(|r| plan(s, r, &sources)).collect();
    let mut by_id: BTreeMap<Identity, Vec<(usize, Job)>> = BTreeMap::new();
    for (pi, p) in plans.iter_mut().enumerate() {
        for (id, jobs) in std::mem::take(&mut p.groups) {
            by_id
                .entry(id)
                .or_default()
                .extend(jobs.into_iter().map(|j| (pi, j)));
        }
    }
    let mut forwarded = false;
    for (id, jobs) in by_id {
        let outcome = privs::run_as(&id, || deliver_group(s, &plans, &jobs));
        let results = match outcome {
            Ok(done) if done.len() == jobs.len() => done,
            Ok(_) => jobs
                .iter()
                .map(|(_, j)| {
                    result(
                        j.index,
                        Outcome::Deferred,
                        "4.3.0",
                        "internal error: result count",
                    )
                })
                .collect(),
            Err(e) => {
                for (pi, _) in &jobs {
                    oxipost_log::warning!("{}: {e}", plans[*pi].req.queue_id);
                }
                jobs.iter()
                    .map(|(_, j)| result(j.index, Outcome::Deferred, "4.3.0", &e))
                    .collect()
            }
        };
        for ((pi, job), r) in jobs.iter().zip(results) {
            if matches!(job.target, Target::Forward { .. }) && r.outcome == Outcome::Delivered {
                forwarded = true;
            }
            plans[*pi].parts[job.pos].push(r);
        }
    }
    if forwarded {
        reinject::wake_qmgr(s.queue.queue_directory.as_path());
    }
    plans
        .into_iter()
        .map(|p| {
            p.parts
                .into_iter()
                .zip(&p.req.recipients)
                .map(|(parts, rcpt)| combine(rcpt.index, parts))
                .collect()
        })
        .collect()
}

/// Delivers jobs that share one identity (after the switch to it); results in job order.
fn deliver_group(s: &Settings, plans: &[Plan], jobs: &[(usize, Job)]) -> Vec<RcptResult> {
    let mut out: Vec<Option<RcptResult>> = vec![None; jobs.len()];
    let mut batch = MaildirBatch::new();
    let mut staged: Vec<usize> = Vec::new();
    for (k, (pi, job)) in jobs.iter().enumerate() {
        let p = &plans[*pi];
        let Some(qf) = p.qf.as_ref() else {
            out[k] = Some(result(
                job.index,
                Outcome::Deferred,
                "4.3.0",
                "queue file not open",
            ));
            continue;
        };
        let ctx = Ctx { s, req: p.req, qf };
        out[k] = match &job.target {
            Target::Maildir(dir) => match ctx.stage_maildir(&mut batch, job, dir) {
                Ok(()) => {
                    staged.push(k);
                    None
                }
                Err(r) => Some(r),
            },
            Target::Mbox { path, spool } => Some(ctx.mbox(job, path, *spool)),
            Target::Command(cmd) => Some(ctx.command(job, cmd)),
            Target::File(path) if path.as_os_str().as_encoded_bytes().ends_with(b"/") => {
                match ctx.stage_maildir(&mut batch, job, path) {
                    Ok(()) => {
                        staged.push(k);
                        None
                    }
                    Err(r) => Some(r),
                }
            }
            Target::File(path) => Some(ctx.file(job, path)),
            Target::Forward { sender, recipients } => Some(ctx.forward(job, sender, recipients)),
        };
    }
    for (k, r) in staged.into_iter().zip(batch.commit()) {
        let index = jobs[k].1.index;
        out[k] = Some(match r {
            Ok(_) => result(index, Outcome::Delivered, "2.0.0", "delivered to maildir"),
            Err(e) => result(
                index,
                outcome_of(e.is_temporary()),
                e.dsn(),
                format!("maildir delivery failed: {e}"),
            ),
        });
    }
    out.into_iter()
        .zip(jobs)
        .map(|(r, (_, job))| {
            r.unwrap_or_else(|| result(job.index, Outcome::Deferred, "4.3.0", "internal error"))
        })
        .collect()
}

/// The rights a job runs with (see [`crate::privs`]).
fn identity_for(s: &Settings, job: &Job) -> Result<Identity, String> {
    let user = Identity::user(job.user.uid, job.user.gid);
    if !privs::privileged() {
        return Ok(user);
    }
    match &job.target {
        // Postfix: "command delivery for root executes with $default_privs privileges".
        Target::Command(_) | Target::File(_) if job.user.uid == 0 => {
            let d = resolve::system_user(&s.default_privs)?
                .ok_or_else(|| format!("default_privs user {} does not exist", s.default_privs))?;
            Ok(Identity::user(d.uid, d.gid))
        }
        Target::Mbox { spool: true, .. } => Ok(spool_identity(&s.mail_spool_directory, &job.user)),
        _ => Ok(user),
    }
}

/// Postfix's rule for `mail_spool_directory`: a world-writable spool is written as the user,
/// a group-writable one as the user with the spool's group, any other as root (the new file
/// is then given to the user).
fn spool_identity(dir: &Path, user: &UserInfo) -> Identity {
    match std::fs::metadata(dir) {
        Ok(md) if md.mode() & 0o002 != 0 => Identity::user(user.uid, user.gid),
        Ok(md) if md.mode() & 0o020 != 0 => Identity {
            uid: user.uid,
            gid: md.gid(),
            groups: vec![user.gid, md.gid()],
        },
        _ => Identity::user(0, 0),
    }
}

/// Reads the message header (up to the first empty line, at most `limit` bytes).
fn read_header(qf: &QueueFile, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut r = qf.content().take(limit);
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        let start = out.len().saturating_sub(3);
        out.extend_from_slice(&buf[..n]);
        if out.starts_with(b"\n") || out.starts_with(b"\r\n") {
            return Ok(Vec::new());
        }
        if let Some(end) = find_blank_line(&out[start..]) {
            out.truncate(start + end);
            return Ok(out);
        }
    }
}

/// The end of the first empty line after a line end in `b`.
fn find_blank_line(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        let rest = &b[i..];
        if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

struct Ctx<'a> {
    s: &'a Settings,
    req: &'a DeliveryRequest,
    qf: &'a QueueFile,
}

impl Ctx<'_> {
    fn headers(&self, job: &Job, delivered_to: bool) -> Vec<String> {
        let mut h = vec![return_path_header(&job.sender)];
        h.extend(original_to_header(&job.orig));
        if delivered_to {
            h.push(delivered_to_header(&job.addr.address));
        }
        h
    }

    fn stage_maildir(
        &self,
        batch: &mut MaildirBatch,
        job: &Job,
        dir: &Path,
    ) -> Result<(), RcptResult> {
        let positive = [self.s.mailbox_size_limit, self.s.message_size_limit]
            .into_iter()
            .filter(|&n| n > 0)
            .min();
        let opts = DeliverOptions {
            size_in_name: false,
            size_limit: positive,
        };
        let headers = self.headers(job, true);
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        batch
            .stage(&Maildir::new(dir), &refs, self.qf.content(), &opts)
            .map(|_| ())
            .map_err(|e| {
                result(
                    job.index,
                    outcome_of(e.is_temporary()),
                    e.dsn(),
                    format!("maildir delivery failed: {e}"),
                )
            })
    }

    fn mbox(&self, job: &Job, path: &Path, spool: bool) -> RcptResult {
        let mut lock = self.s.lock.clone();
        lock.dotlock_may_fail = spool;
        let opts = MboxOptions {
            lock,
            mailbox_size_limit: Some(self.s.mailbox_size_limit),
            message_size_limit: Some(self.s.message_size_limit),
            create_mode: 0o600,
        };
        let existed = std::fs::symlink_metadata(path).is_ok();
        let headers = self.headers(job, true);
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        match deliver_mbox(path, &job.sender, &refs, self.qf.content(), &opts) {
            Ok(d) => {
                for w in d.warnings {
                    oxipost_log::warning!("{}: {w}", self.req.queue_id);
                }
                if !existed && privs::privileged() {
                    // Created with the spool's rights: the mailbox belongs to its user.
                    if let Err(e) =
                        std::os::unix::fs::lchown(path, Some(job.user.uid), Some(job.user.gid))
                    {
                        oxipost_log::warning!("chown {}: {e}", path.display());
                    }
                }
                result(
                    job.index,
                    Outcome::Delivered,
                    "2.0.0",
                    "delivered to mailbox",
                )
            }
            Err(e) => result(
                job.index,
                outcome_of(e.is_temporary()),
                e.dsn(),
                format!(
                    "cannot update mailbox {} for user {}. {e}",
                    path.display(),
                    job.user.name
                ),
            ),
        }
    }

    fn command(&self, job: &Job, cmd: &str) -> RcptResult {
        let mut prefix = from_line(&job.sender, SystemTime::now());
        prefix.push('\n');
        for h in self.headers(job, self.s.delivered_to_command) {
            prefix.push_str(&h);
            prefix.push('\n');
        }
        let cwd = if job.user.home.is_dir() {
            job.user.home.as_path()
        } else {
            Path::new("/")
        };
        let inv = Invocation {
            command: cmd,
            env: command_env(&job.sender, job, &self.req.attributes),
            export: &self.s.export_environment,
            cwd,
            time_limit: self.s.command_time_limit,
        };
        let r = command::deliver(&inv, prefix.as_bytes(), self.qf.content());
        result(job.index, r.outcome, r.dsn, r.text)
    }

    /// A `/file` destination: appended in mbox format, created `0600` when missing.
    fn file(&self, job: &Job, path: &Path) -> RcptResult {
        let opts = MboxOptions {
            lock: self.s.lock.clone(),
            mailbox_size_limit: Some(self.s.mailbox_size_limit),
            message_size_limit: Some(self.s.message_size_limit),
            create_mode: 0o600,
        };
        let headers = self.headers(job, self.s.delivered_to_file);
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        match deliver_mbox(path, &job.sender, &refs, self.qf.content(), &opts) {
            Ok(d) => {
                for w in d.warnings {
                    oxipost_log::warning!("{}: {w}", self.req.queue_id);
                }
                result(
                    job.index,
                    Outcome::Delivered,
                    "2.0.0",
                    format!("delivered to file: {}", path.display()),
                )
            }
            Err(e) => result(
                job.index,
                outcome_of(e.is_temporary()),
                e.dsn(),
                format!("cannot append message to file {}: {e}", path.display()),
            ),
        }
    }

    /// Remote destinations of an expansion: one new queue file.
    fn forward(&self, job: &Job, sender: &str, recipients: &[String]) -> RcptResult {
        let rcpt = self.req.recipients.iter().find(|r| r.index == job.index);
        let orig = reinject::Original {
            address: &job.addr.address,
            orcpt: rcpt.and_then(|r| r.orcpt.as_deref()),
            notify: rcpt.and_then(|r| r.notify.as_deref()),
        };
        let layout = match Layout::new(self.s.queue.clone()) {
            Ok(l) => l,
            Err(e) => return result(job.index, Outcome::Deferred, "4.3.0", e.to_string()),
        };
        match reinject::forward(
            &layout,
            self.qf,
            &orig,
            sender,
            recipients,
            self.s.delivered_to_forward,
        ) {
            Ok(id) => {
                oxipost_log::info!(
                    "{}: {id}: forwarded from <{}> to {}",
                    self.req.queue_id,
                    job.addr.address,
                    recipients
                        .iter()
                        .map(|r| format!("<{r}>"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                result(
                    job.index,
                    Outcome::Delivered,
                    "2.0.0",
                    format!("forwarded as {id}"),
                )
            }
            Err(e) => result(job.index, Outcome::Deferred, "4.3.0", e),
        }
    }
}

/// The environment Postfix's local(8) gives a command (after `PATH`).
fn command_env(sender: &str, job: &Job, attributes: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "HOME".to_string(),
            job.user.home.to_string_lossy().into_owned(),
        ),
        ("LOGNAME".to_string(), job.user.name.clone()),
        ("USER".to_string(), job.user.name.clone()),
        ("SHELL".to_string(), job.user.shell.clone()),
    ];
    if let Some(ext) = &job.addr.extension {
        env.push(("EXTENSION".into(), ext.clone()));
    }
    env.push(("LOCAL".into(), job.addr.local.clone()));
    if let Some(d) = &job.addr.domain {
        env.push(("DOMAIN".into(), d.clone()));
    }
    env.push(("RECIPIENT".into(), job.addr.address.clone()));
    env.push(("SENDER".into(), sender.to_string()));
    env.push(("ORIGINAL_RECIPIENT".into(), job.orig.clone()));
    for (attr, var) in [
        ("client_address", "CLIENT_ADDRESS"),
        ("client_name", "CLIENT_HOSTNAME"),
        ("helo_name", "CLIENT_HELO"),
        ("protocol_name", "CLIENT_PROTOCOL"),
        ("sasl_method", "SASL_METHOD"),
        ("sasl_username", "SASL_USERNAME"),
    ] {
        if let Some((_, v)) = attributes.iter().find(|(n, _)| n == attr) {
            env.push((var.to_string(), v.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::tests::settings;

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            home: "/home/alice".into(),
            uid: 1000,
            gid: 1000,
            shell: "/bin/sh".into(),
            listed: true,
        }
    }

    #[test]
    fn mailbox_choice() {
        let mut s = settings();
        assert_eq!(
            choose_target(&s, &user()),
            Target::Mbox {
                path: "/var/mail/alice".into(),
                spool: true
            }
        );
        s.home_mailbox = "Maildir/".into();
        assert_eq!(
            choose_target(&s, &user()),
            Target::Maildir("/home/alice/Maildir/".into())
        );
        s.home_mailbox = "Mailbox".into();
        assert_eq!(
            choose_target(&s, &user()),
            Target::Mbox {
                path: "/home/alice/Mailbox".into(),
                spool: false
            }
        );
        s.mailbox_command = "/usr/bin/procmail".into();
        assert_eq!(
            choose_target(&s, &user()),
            Target::Command("/usr/bin/procmail".into())
        );
    }

    #[test]
    fn loop_detection() {
        let h = b"Received: x\r\nDelivered-To: Alice@Example.org\r\n\r\n";
        assert!(is_loop(h, "alice@example.org"));
        assert!(!is_loop(h, "bob@example.org"));
        assert!(!is_loop(
            b"Subject: x\n\nDelivered-To: alice@example.org\n",
            "alice@example.org"
        ));
    }

    #[test]
    fn header_block_end() {
        assert_eq!(find_blank_line(b"a: b\n\nbody"), Some(6));
        assert_eq!(find_blank_line(b"a: b\r\n\r\nbody"), Some(8));
        assert_eq!(find_blank_line(b"a: b\r\n"), None);
    }

    #[test]
    fn spool_rights() {
        let dir = tempfile::tempdir().expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert_eq!(spool_identity(p, &user()), Identity::user(1000, 1000));
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(spool_identity(p, &user()), Identity::user(0, 0));
    }
}

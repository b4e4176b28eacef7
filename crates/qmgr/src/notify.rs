//! Who is told what about a message, as Postfix's bounce daemon decides it:
//!
//! - **Bounces** go to the envelope sender for recipients whose `NOTIFY` is unset or
//!   includes `FAILURE`; with `bounce` in `notify_classes`, a headers-only copy goes to
//!   `bounce_notice_recipient`.
//! - **Double bounces**: a bounce (null sender) that cannot be delivered goes, whole, to
//!   `2bounce_notice_recipient` when `2bounce` is in `notify_classes`, from
//!   `double_bounce_sender`; otherwise it is discarded. Mail from `double_bounce_sender`
//!   that fails is always discarded (and local discards mail *to* that address), so
//!   notifications never loop.
//! - **Delay warnings**: once per message, when it has been queued for
//!   `delay_warning_time` (0: never) and still has deferred recipients whose `NOTIFY` is
//!   unset or includes `DELAY` (`Action: delayed`, `Will-Retry-Until:`); with `delay` in
//!   `notify_classes`, a copy to `delay_notice_recipient`.
//! - **Success reports** for recipients with `NOTIFY=SUCCESS` (`Action: delivered` for
//!   final delivery by local, virtual, discard; `relayed` otherwise, as Postfix reports
//!   hand-off to a non-DSN system).
//!
//! - **Trouble notices**: with `resource` in `notify_classes`, a recipient deferred by a
//!   resource problem (a table that cannot be read, `4.3.0 ... lookup failure`, a queue
//!   file that cannot be written) makes a postmaster warning to `error_notice_recipient`;
//!   with `software`, one deferred by a software problem (a transport that is missing from
//!   master.cf or whose agent crashed: `mail transport unavailable`), unless the notice
//!   would need that same transport. One notice per problem (class and reason) an hour.
//!
//! Notices are never sent to the null sender. Postmaster addresses without a domain get
//! `@$myorigin`. `notify_classes` words `protocol` and `policy` concern the SMTP server,
//! which reports them itself (a session transcript).

use crate::bounce::{self, Audience, BounceInfo, Failed, Kind};
use crate::settings::Settings;
use oxipost_config::Config;
use oxipost_queue::{Notify, QueueFile, Recipient};
use std::path::Path;
use std::time::Duration;

/// The notification parameters, read once at start.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// `delay_warning_time`; zero disables warnings.
    pub delay_warning_time: Duration,
    /// `notify_classes`, lowercased.
    pub classes: Vec<String>,
    pub bounce_notice_recipient: String,
    pub double_bounce_notice_recipient: String,
    pub delay_notice_recipient: String,
    pub error_notice_recipient: String,
    /// `double_bounce_sender@$myorigin`.
    pub double_bounce_sender: String,
    pub myorigin: String,
}

impl NotifySettings {
    pub fn from_config(cfg: &Config) -> Result<NotifySettings, String> {
        let e = |e: oxipost_config::ConfigError| e.to_string();
        let myorigin = cfg.get("myorigin").map_err(e)?.to_ascii_lowercase();
        let mut ns = NotifySettings {
            delay_warning_time: cfg.get_time("delay_warning_time").map_err(e)?,
            classes: cfg
                .get_list("notify_classes")
                .map_err(e)?
                .into_iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            bounce_notice_recipient: cfg.get("bounce_notice_recipient").map_err(e)?,
            double_bounce_notice_recipient: cfg.get("2bounce_notice_recipient").map_err(e)?,
            delay_notice_recipient: cfg.get("delay_notice_recipient").map_err(e)?,
            error_notice_recipient: cfg.get("error_notice_recipient").map_err(e)?,
            double_bounce_sender: String::new(),
            myorigin,
        };
        ns.double_bounce_sender = ns.qualify(&cfg.get("double_bounce_sender").map_err(e)?);
        Ok(ns)
    }

    /// True when `class` is in `notify_classes`.
    pub fn has(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == class)
    }

    /// `name` → `name@$myorigin`; addresses with a domain are kept.
    pub fn qualify(&self, addr: &str) -> String {
        if addr.contains('@') || addr.is_empty() {
            addr.to_string()
        } else {
            format!("{addr}@{}", self.myorigin)
        }
    }

    /// True for mail from `double_bounce_sender` (a postmaster notification).
    pub fn is_double_bounce(&self, sender: &str) -> bool {
        let local = |a: &str| {
            a.rsplit_once('@')
                .map_or(a, |(l, _)| l)
                .to_ascii_lowercase()
        };
        !sender.is_empty() && local(sender) == local(&self.double_bounce_sender)
    }
}

/// True when a recipient's `NOTIFY` asks for this kind of report (unset: failures and
/// delays, never successes).
pub fn wants(notify: Notify, kind: Kind) -> bool {
    if notify.contains(Notify::NEVER) {
        return false;
    }
    match kind {
        Kind::Failure => notify.is_unspecified() || notify.contains(Notify::FAILURE),
        Kind::Delay => notify.is_unspecified() || notify.contains(Notify::DELAY),
        Kind::Success => notify.contains(Notify::SUCCESS),
    }
}

/// `Action:` for a successful delivery through `relay`.
pub fn success_action(relay: &str) -> &'static str {
    match relay {
        "local" | "virtual" | "discard" => "delivered",
        _ => "relayed",
    }
}

/// The `notify_classes` class of a deferral, if it is a resource or software problem.
pub fn trouble_class(status: &str, text: &str) -> Option<&'static str> {
    let t = text.to_ascii_lowercase();
    if t.contains("mail transport unavailable") || t.contains("unknown mail transport") {
        return Some("software");
    }
    let resource = t.contains("lookup failure")
        || t.contains("lookup error")
        || t.contains("table failure")
        || t.contains("queue file write error")
        || t.contains("no space left")
        || t.contains("insufficient system storage");
    (status.starts_with("4.3.") && resource).then_some("resource")
}

/// How long one problem (class and reason) is reported once only.
const TROUBLE_QUIET: Duration = Duration::from_secs(3600);

type TroubleSent = std::collections::HashMap<(&'static str, String), std::time::Instant>;

thread_local! {
    /// When each problem was last reported by this process: a broken transport makes one
    /// notice an hour, not one per message.
    static TROUBLE_SENT: std::cell::RefCell<TroubleSent> =
        std::cell::RefCell::new(TroubleSent::new());
}

/// One recipient result the notifier reports: index, status, text, relay.
pub type RcptOutcome = (usize, String, String, String);

/// Builds and queues the notices of one message.
pub struct Notifier<'a> {
    pub s: &'a Settings,
    pub qid: &'a str,
    pub path: &'a Path,
    pub sender: &'a str,
    pub recipients: &'a [Recipient],
}

impl Notifier<'_> {
    fn entries(&self, list: &[&RcptOutcome], action: impl Fn(&str) -> &'static str) -> Vec<Failed> {
        list.iter()
            .map(|(i, status, text, relay)| {
                let r = &self.recipients[*i];
                Failed {
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    status: status.clone(),
                    text: text.clone(),
                    action: action(relay),
                }
            })
            .collect()
    }

    fn send(
        &self,
        qf: &QueueFile,
        rcpts: &[Failed],
        kind: Kind,
        audience: Audience,
        (from, to): (&str, &str),
        delay: Option<(Duration, Duration)>,
    ) -> Result<String, String> {
        let info = BounceInfo {
            myhostname: &self.s.myhostname,
            mail_name: &self.s.mail_name,
            queue_id: self.qid,
            bounce_size_limit: self.s.bounce_size_limit,
            to,
            delay,
        };
        let text = bounce::build(&info, qf, rcpts, kind, audience);
        bounce::queue(&self.s.layout, from, to, &text)
    }

    fn open(&self) -> Result<QueueFile, String> {
        QueueFile::open(self.path).map_err(|e| e.to_string())
    }

    /// Non-delivery: the sender's bounce, the postmaster copy, or the double bounce.
    /// `Ok(true)` when something was queued; `Err` when the notice must be retried.
    pub fn failure(&self, failed: &[RcptOutcome]) -> Result<bool, String> {
        let ns = &self.s.notify;
        let qid = self.qid;
        if failed.is_empty() {
            return Ok(false);
        }
        let all: Vec<&RcptOutcome> = failed.iter().collect();
        if self.sender.is_empty() {
            if !ns.has("2bounce") {
                oxipost_log::info!("{qid}: undeliverable notification discarded (null sender)");
                return Ok(false);
            }
            let qf = self.open()?;
            let to = ns.qualify(&ns.double_bounce_notice_recipient);
            let id = self.send(
                &qf,
                &self.entries(&all, |_| "failed"),
                Kind::Failure,
                Audience::DoubleBounce,
                (&ns.double_bounce_sender, &to),
                None,
            )?;
            oxipost_log::info!("{qid}: postmaster non-delivery notification: {id}");
            return Ok(true);
        }
        if ns.is_double_bounce(self.sender) {
            oxipost_log::warning!("{qid}: undeliverable postmaster notification discarded");
            return Ok(false);
        }
        let wanted: Vec<&RcptOutcome> = failed
            .iter()
            .filter(|(i, ..)| wants(self.recipients[*i].notify, Kind::Failure))
            .collect();
        let mut queued = false;
        let qf = self.open()?;
        if !wanted.is_empty() {
            let id = self.send(
                &qf,
                &self.entries(&wanted, |_| "failed"),
                Kind::Failure,
                Audience::Sender,
                ("", self.sender),
                None,
            )?;
            oxipost_log::info!("{qid}: sender non-delivery notification: {id}");
            queued = true;
        }
        if ns.has("bounce") {
            let to = ns.qualify(&ns.bounce_notice_recipient);
            match self.send(
                &qf,
                &self.entries(&all, |_| "failed"),
                Kind::Failure,
                Audience::Postmaster,
                (&ns.double_bounce_sender, &to),
                None,
            ) {
                Ok(id) => {
                    oxipost_log::info!("{qid}: postmaster non-delivery notification: {id}");
                    queued = true;
                }
                // The sender's notice is what matters; a lost copy is only logged.
                Err(e) => oxipost_log::warning!("{qid}: cannot queue postmaster copy: {e}"),
            }
        }
        Ok(queued)
    }

    /// A delay warning for `deferred` after `age` in the queue (the caller checks that
    /// none was sent before). `Ok(true)` when something was queued.
    pub fn delay(&self, deferred: &[RcptOutcome], age: Duration) -> Result<bool, String> {
        let ns = &self.s.notify;
        let qid = self.qid;
        if self.sender.is_empty() || ns.is_double_bounce(self.sender) {
            return Ok(false);
        }
        let lifetime = self.s.maximal_queue_lifetime;
        let delay = Some((age.min(lifetime), lifetime));
        let wanted: Vec<&RcptOutcome> = deferred
            .iter()
            .filter(|(i, ..)| wants(self.recipients[*i].notify, Kind::Delay))
            .collect();
        let mut queued = false;
        let qf = self.open()?;
        if !wanted.is_empty() {
            let id = self.send(
                &qf,
                &self.entries(&wanted, |_| "delayed"),
                Kind::Delay,
                Audience::Sender,
                ("", self.sender),
                delay,
            )?;
            oxipost_log::info!("{qid}: sender delay notification: {id}");
            queued = true;
        }
        if ns.has("delay") {
            let all: Vec<&RcptOutcome> = deferred.iter().collect();
            let to = ns.qualify(&ns.delay_notice_recipient);
            match self.send(
                &qf,
                &self.entries(&all, |_| "delayed"),
                Kind::Delay,
                Audience::Postmaster,
                (&ns.double_bounce_sender, &to),
                delay,
            ) {
                Ok(id) => {
                    oxipost_log::info!("{qid}: postmaster delay notification: {id}");
                    queued = true;
                }
                Err(e) => oxipost_log::warning!("{qid}: cannot queue postmaster copy: {e}"),
            }
        }
        Ok(queued)
    }

    /// Resource and software trouble among `deferred` (see the module documentation): a
    /// postmaster warning per class in `notify_classes`, to `error_notice_recipient`, with
    /// the message's headers. `Ok(true)` when something was queued.
    pub fn trouble(&self, deferred: &[RcptOutcome]) -> Result<bool, String> {
        let ns = &self.s.notify;
        let qid = self.qid;
        if ns.is_double_bounce(self.sender) {
            return Ok(false);
        }
        let mut queued = false;
        for class in ["resource", "software"] {
            if !ns.has(class) {
                continue;
            }
            let to = ns.qualify(&ns.error_notice_recipient);
            // A transport that cannot deliver cannot deliver its own trouble notice either:
            // such a notice would only wait in the queue beside the mail it reports.
            let notice_route = crate::resolve::resolve(self.s, &to).transport;
            let these: Vec<&RcptOutcome> = deferred
                .iter()
                .filter(|(_, status, text, _)| trouble_class(status, text) == Some(class))
                .filter(|(i, ..)| {
                    class != "software"
                        || crate::resolve::resolve(self.s, &self.recipients[*i].address).transport
                            != notice_route
                })
                .collect();
            let Some((_, _, reason, _)) = these.first() else {
                continue;
            };
            let key = (class, reason.clone());
            let now = std::time::Instant::now();
            let recent = TROUBLE_SENT.with(|t| {
                t.borrow()
                    .get(&key)
                    .is_some_and(|at| now.duration_since(*at) < TROUBLE_QUIET)
            });
            if recent {
                continue;
            }
            let qf = self.open()?;
            let id = self.send(
                &qf,
                &self.entries(&these, |_| "delayed"),
                Kind::Delay,
                Audience::Postmaster,
                (&ns.double_bounce_sender, &to),
                None,
            )?;
            oxipost_log::info!("{qid}: postmaster {class} notification: {id}");
            TROUBLE_SENT.with(|t| t.borrow_mut().insert(key, now));
            queued = true;
        }
        Ok(queued)
    }

    /// Success reports for delivered recipients that asked for one (`NOTIFY=SUCCESS`).
    /// A report that cannot be queued is logged, not retried (the mail is delivered).
    pub fn success(&self, delivered: &[RcptOutcome]) -> bool {
        let qid = self.qid;
        if self.sender.is_empty() || self.s.notify.is_double_bounce(self.sender) {
            return false;
        }
        let wanted: Vec<&RcptOutcome> = delivered
            .iter()
            .filter(|(i, ..)| wants(self.recipients[*i].notify, Kind::Success))
            .collect();
        if wanted.is_empty() {
            return false;
        }
        let r = self.open().and_then(|qf| {
            self.send(
                &qf,
                &self.entries(&wanted, success_action),
                Kind::Success,
                Audience::Sender,
                ("", self.sender),
                None,
            )
        });
        match r {
            Ok(id) => {
                oxipost_log::info!("{qid}: sender delivery status notification: {id}");
                true
            }
            Err(e) => {
                oxipost_log::warning!("{qid}: cannot queue delivery status notification: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_decides() {
        assert!(wants(Notify::default(), Kind::Failure));
        assert!(wants(Notify::default(), Kind::Delay));
        assert!(!wants(Notify::default(), Kind::Success));
        assert!(!wants(Notify::NEVER, Kind::Failure));
        assert!(wants(Notify::SUCCESS, Kind::Success));
        assert!(!wants(Notify::SUCCESS, Kind::Failure));
        assert!(wants(Notify::SUCCESS | Notify::DELAY, Kind::Delay));
        assert_eq!(success_action("local"), "delivered");
        assert_eq!(success_action("smtp.example.org[192.0.2.1]:25"), "relayed");
    }

    #[test]
    fn trouble_classes() {
        assert_eq!(
            trouble_class("4.3.0", "transport_maps lookup failure"),
            Some("resource")
        );
        assert_eq!(
            trouble_class("4.3.0", "mail transport unavailable"),
            Some("software")
        );
        assert_eq!(trouble_class("4.4.1", "connection refused"), None);
        assert_eq!(trouble_class("4.2.2", "mailbox full"), None);
    }
}

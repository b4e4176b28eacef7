//! One batch of delivery requests: per recipient the loop check and the table lookups
//! (mailbox, uid, gid — in the parent, before any switch of rights), then the deliveries,
//! grouped by owner so that each owner costs one process switch and each Maildir one
//! directory sync per batch.
//!
//! Results follow Postfix's virtual(8): a recipient not in `virtual_mailbox_maps` bounces
//! with `5.1.1 unknown user: "addr"`; a missing or too-small uid, a missing gid, or a path
//! that climbs out of `virtual_mailbox_base` defers with `4.3.0 mail system configuration
//! error` (and a warning naming the table); a table that cannot answer defers; a full disk
//! or a size limit is the mailbox library's verdict. Nothing is reported delivered before it
//! is durable.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use oxipost_ipc::{DeliveryRequest, Outcome, RcptRef, RcptResult};
use oxipost_mailbox::{
    DeliverOptions, Maildir, MaildirBatch, MboxOptions, count_delivered_to, deliver_mbox,
    delivered_to_header, original_to_header, return_path_header,
};
use oxipost_maps::{AddrQuery, Maps};
use oxipost_queue::QueueFile;

use crate::privs::{self, Identity};
use crate::settings::Settings;

/// Where one recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Maildir(PathBuf),
    Mbox(PathBuf),
}

/// One recipient to deliver.
#[derive(Debug, Clone)]
struct Job {
    /// (request, position in the request).
    req: usize,
    pos: usize,
    index: u32,
    address: String,
    orig: String,
    target: Target,
}

fn result(index: u32, outcome: Outcome, dsn: &str, text: impl Into<String>) -> RcptResult {
    RcptResult {
        index,
        outcome,
        status: dsn.to_string(),
        text: text.into(),
        relay: "virtual".to_string(),
    }
}

fn outcome_of(temporary: bool) -> Outcome {
    if temporary {
        Outcome::Deferred
    } else {
        Outcome::Bounced
    }
}

/// The original recipient for `X-Original-To:`: the `rfc822;` ORCPT when there is one.
pub fn original_recipient(address: &str, orcpt: Option<&str>) -> String {
    let Some((kind, value)) = orcpt.and_then(|o| o.split_once(';')) else {
        return address.to_string();
    };
    if !kind.trim().eq_ignore_ascii_case("rfc822") {
        return address.to_string();
    }
    let mut out = Vec::new();
    let b = value.trim().as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8_lossy(&out).into_owned();
    if s.is_empty() { address.to_string() } else { s }
}

/// A path from `virtual_mailbox_maps`, under the base; `None` when it climbs out.
pub fn mailbox_path(base: &std::path::Path, value: &str) -> Option<Target> {
    let value = value.trim();
    if value.is_empty() || value.split('/').any(|c| c == "..") {
        return None;
    }
    let path = PathBuf::from(format!(
        "{}/{}",
        base.to_string_lossy().trim_end_matches('/'),
        value.trim_start_matches('/')
    ));
    Some(if value.ends_with('/') {
        Target::Maildir(path)
    } else {
        Target::Mbox(path)
    })
}

/// Why a recipient gets no job.
enum Refusal {
    Bounce(&'static str, String),
    Defer(&'static str, String),
}

fn lookup(s: &Settings, maps: &Maps, address: &str) -> Result<Option<String>, String> {
    let q = AddrQuery {
        delimiter: &s.recipient_delimiter,
        is_local: None,
        at_domain: true,
    };
    maps.lookup_addr(address, &q)
        .map(|m| m.map(|m| m.value))
        .map_err(|e| e.message)
}

/// Table lookups for one recipient: its mailbox and owner.
fn resolve(s: &Settings, address: &str) -> Result<(Target, Identity), Refusal> {
    let config_error = |why: String| {
        oxipost_log::warning!("{why}");
        Refusal::Defer("4.3.0", "mail system configuration error".into())
    };
    let temp = |e: String| Refusal::Defer("4.3.0", format!("table lookup failure: {e}"));
    let Some(mailbox) = lookup(s, &s.mailbox_maps, address).map_err(temp)? else {
        return Err(Refusal::Bounce(
            "5.1.1",
            format!("unknown user: \"{address}\""),
        ));
    };
    let Some(target) = mailbox_path(&s.mailbox_base, &mailbox) else {
        return Err(config_error(format!(
            "recipient {address}: bad mailbox path {mailbox:?} in virtual_mailbox_maps"
        )));
    };
    let number = |maps: &Maps, what: &str| -> Result<u32, Refusal> {
        match lookup(s, maps, address).map_err(temp)? {
            None => Err(config_error(format!(
                "recipient {address}: not found in {what}"
            ))),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| config_error(format!("recipient {address}: bad {what} value {v:?}"))),
        }
    };
    let uid = number(&s.uid_maps, "virtual_uid_maps")?;
    if uid < s.minimum_uid {
        return Err(config_error(format!(
            "recipient {address}: bad uid {uid} in virtual_uid_maps (below virtual_minimum_uid {})",
            s.minimum_uid
        )));
    }
    let gid = number(&s.gid_maps, "virtual_gid_maps")?;
    Ok((target, Identity::user(uid, gid)))
}

/// Reads the message header (up to the first empty line, at most `limit` bytes).
fn read_header(qf: &QueueFile, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    qf.content().take(limit).read_to_end(&mut out)?;
    let end = (0..out.len()).find_map(|i| {
        let rest = &out[i..];
        if i == 0 && (rest.starts_with(b"\n") || rest.starts_with(b"\r\n")) {
            Some(0)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    });
    if let Some(e) = end {
        out.truncate(e);
    }
    Ok(out)
}

/// Delivers a batch of requests; one result list per request, in request order.
pub fn deliver_batch(s: &Settings, reqs: &[DeliveryRequest]) -> Vec<Vec<RcptResult>> {
    let mut results: Vec<Vec<Option<RcptResult>>> = reqs
        .iter()
        .map(|r| vec![None; r.recipients.len()])
        .collect();
    let mut files: Vec<Option<QueueFile>> = Vec::new();
    let mut groups: BTreeMap<Identity, Vec<Job>> = BTreeMap::new();
    for (ri, req) in reqs.iter().enumerate() {
        let defer_all = |out: &mut Vec<Option<RcptResult>>, text: String| {
            for (pos, r) in req.recipients.iter().enumerate() {
                out[pos] = Some(result(r.index, Outcome::Deferred, "4.3.0", text.clone()));
            }
        };
        let qf = match QueueFile::open(&req.path) {
            Ok(qf) => qf,
            Err(e) => {
                defer_all(&mut results[ri], format!("cannot read queue file: {e}"));
                files.push(None);
                continue;
            }
        };
        let header = match read_header(&qf, s.header_size_limit) {
            Ok(h) => h,
            Err(e) => {
                defer_all(&mut results[ri], format!("error reading message: {e}"));
                files.push(None);
                continue;
            }
        };
        files.push(Some(qf));
        for (pos, rcpt) in req.recipients.iter().enumerate() {
            results[ri][pos] = plan_one(s, &header, ri, pos, rcpt, &mut groups);
        }
    }
    for (id, jobs) in groups {
        let done = privs::run_as(&id, || deliver_group(s, reqs, &files, &jobs));
        let done = match done {
            Ok(d) if d.len() == jobs.len() => d,
            Ok(_) => jobs
                .iter()
                .map(|j| result(j.index, Outcome::Deferred, "4.3.0", "internal error"))
                .collect(),
            Err(e) => {
                oxipost_log::warning!("{e}");
                jobs.iter()
                    .map(|j| result(j.index, Outcome::Deferred, "4.3.0", &e))
                    .collect()
            }
        };
        for (job, r) in jobs.iter().zip(done) {
            results[job.req][job.pos] = Some(r);
        }
    }
    results
        .into_iter()
        .zip(reqs)
        .map(|(rs, req)| {
            rs.into_iter()
                .zip(&req.recipients)
                .map(|(r, rcpt)| {
                    r.unwrap_or_else(|| {
                        result(rcpt.index, Outcome::Deferred, "4.3.0", "internal error")
                    })
                })
                .collect()
        })
        .collect()
}

/// Decides one recipient: a final result now, or a job in its owner's group.
fn plan_one(
    s: &Settings,
    header: &[u8],
    req: usize,
    pos: usize,
    rcpt: &RcptRef,
    groups: &mut BTreeMap<Identity, Vec<Job>>,
) -> Option<RcptResult> {
    if count_delivered_to(header, &rcpt.address) > 0 {
        return Some(result(
            rcpt.index,
            Outcome::Bounced,
            "5.4.6",
            format!("mail forwarding loop for {}", rcpt.address),
        ));
    }
    match resolve(s, &rcpt.address.to_ascii_lowercase()) {
        Err(Refusal::Bounce(dsn, text)) => Some(result(rcpt.index, Outcome::Bounced, dsn, text)),
        Err(Refusal::Defer(dsn, text)) => Some(result(rcpt.index, Outcome::Deferred, dsn, text)),
        Ok((target, id)) => {
            groups.entry(id).or_default().push(Job {
                req,
                pos,
                index: rcpt.index,
                address: rcpt.address.clone(),
                orig: original_recipient(&rcpt.address, rcpt.orcpt.as_deref()),
                target,
            });
            None
        }
    }
}

/// Delivers the jobs of one owner (after the switch to it); results in job order.
fn deliver_group(
    s: &Settings,
    reqs: &[DeliveryRequest],
    files: &[Option<QueueFile>],
    jobs: &[Job],
) -> Vec<RcptResult> {
    let mut out: Vec<Option<RcptResult>> = vec![None; jobs.len()];
    let mut batch = MaildirBatch::new();
    let mut staged = Vec::new();
    let limit = [s.mailbox_limit, s.message_size_limit]
        .into_iter()
        .filter(|&n| n > 0)
        .min();
    for (k, job) in jobs.iter().enumerate() {
        let Some(qf) = files.get(job.req).and_then(Option::as_ref) else {
            out[k] = Some(result(
                job.index,
                Outcome::Deferred,
                "4.3.0",
                "queue file not open",
            ));
            continue;
        };
        let req = &reqs[job.req];
        let mut headers = vec![return_path_header(&req.sender)];
        headers.extend(original_to_header(&job.orig));
        headers.push(delivered_to_header(&job.address));
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        match &job.target {
            Target::Maildir(dir) => {
                let opts = DeliverOptions {
                    size_in_name: false,
                    size_limit: limit,
                };
                match batch.stage(&Maildir::new(dir), &refs, qf.content(), &opts) {
                    Ok(_) => staged.push(k),
                    Err(e) => {
                        out[k] = Some(result(
                            job.index,
                            outcome_of(e.is_temporary()),
                            e.dsn(),
                            format!("maildir delivery failed: {e}"),
                        ));
                    }
                }
            }
            Target::Mbox(path) => {
                let opts = MboxOptions {
                    lock: s.lock.clone(),
                    mailbox_size_limit: Some(s.mailbox_limit),
                    message_size_limit: Some(s.message_size_limit),
                    create_mode: 0o600,
                };
                out[k] = Some(
                    match deliver_mbox(path, &req.sender, &refs, qf.content(), &opts) {
                        Ok(d) => {
                            for w in d.warnings {
                                oxipost_log::warning!("{}: {w}", req.queue_id);
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
                            format!("cannot update mailbox {}: {e}", path.display()),
                        ),
                    },
                );
            }
        }
    }
    for (k, r) in staged.into_iter().zip(batch.commit()) {
        let index = jobs[k].index;
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
        .map(|(r, j)| {
            r.unwrap_or_else(|| result(j.index, Outcome::Deferred, "4.3.0", "internal error"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn paths_under_the_base() {
        let b = Path::new("/var/mail/vhosts/");
        assert_eq!(
            mailbox_path(b, "example.com/joe/"),
            Some(Target::Maildir("/var/mail/vhosts/example.com/joe/".into()))
        );
        assert_eq!(
            mailbox_path(b, "example.com/ann"),
            Some(Target::Mbox("/var/mail/vhosts/example.com/ann".into()))
        );
        assert_eq!(mailbox_path(b, "../etc/passwd"), None);
        assert_eq!(mailbox_path(b, "a/../../x/"), None);
        assert_eq!(mailbox_path(b, " "), None);
    }

    #[test]
    fn original_recipient_from_orcpt() {
        assert_eq!(original_recipient("a@b", None), "a@b");
        assert_eq!(original_recipient("a@b", Some("rfc822;x+2By@c")), "x+y@c");
        assert_eq!(original_recipient("a@b", Some("x400;q")), "a@b");
    }
}

//! Running a whole transaction past a list of milters, as smtpd and the local submission
//! path need it: each milter gets connect, HELO, MAIL, every RCPT, DATA, the headers, the
//! body and end of message, in order, on its own connection. The first reject, tempfail
//! or discard decides; a milter that accepts is left out of the rest of the message.
//! A milter that cannot be reached, times out, closes, or answers garbage gets
//! `milter_default_action` (accept: skip it; tempfail; reject; quarantine), with a warning
//! naming it. The result carries every modification to apply before the queue file is
//! committed.

use crate::client::{Addr, Error, MacroLists, Milter, Modification, Reply, Timeouts};
use crate::proto::{Family, Response, Stage, step};

/// `milter_default_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Accept,
    Tempfail,
    Reject,
    Quarantine,
}

impl DefaultAction {
    pub fn parse(s: &str) -> Result<DefaultAction, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "accept" => DefaultAction::Accept,
            "tempfail" => DefaultAction::Tempfail,
            "reject" => DefaultAction::Reject,
            "quarantine" => DefaultAction::Quarantine,
            other => return Err(format!("bad milter_default_action: {other}")),
        })
    }
}

/// One configured milter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    /// As configured (`inet:127.0.0.1:8891`), for log lines.
    pub name: String,
    pub addr: Addr,
    pub default_action: DefaultAction,
    pub timeouts: Timeouts,
    /// `milter_protocol` (or the entry's `protocol=`): the version offered (2 to 6).
    pub protocol: u32,
}

/// The milter list and what applies to all of it.
#[derive(Debug, Clone, Default)]
pub struct MilterSettings {
    pub milters: Vec<MilterSpec>,
    pub macros: MacroLists,
    /// `milter_macro_daemon_name` (`{daemon_name}`) and `milter_macro_v` (`v`).
    pub daemon_name: String,
    pub v: String,
    /// `milter_macro_defaults`: values for macros that have none.
    pub macro_defaults: Vec<(String, String)>,
}

/// Splits a milter list: white space or commas, with `{ ... }` groups kept whole.
fn split_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth -= 1;
                cur.push(c);
            }
            c if depth == 0 && (c.is_whitespace() || c == ',') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A `milter_protocol` value: 2 to 6 (Postfix's 4 and 6 are the usual ones).
fn parse_protocol(v: &str) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if (2..=6).contains(&n) => Ok(n),
        _ => Err(format!("bad milter_protocol: {v}")),
    }
}

fn parse_time(v: &str) -> Result<std::time::Duration, String> {
    let v = v.trim();
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, "s"), |i| (&v[..i], &v[i..]));
    let n: u64 = num.parse().map_err(|_| format!("bad time: {v}"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604800,
        _ => return Err(format!("bad time unit: {v}")),
    };
    Ok(std::time::Duration::from_secs(n * mult))
}

impl MilterSettings {
    /// Builds the list from the `smtpd_milters`/`non_smtpd_milters` value; each entry is an
    /// address or Postfix 3's `{ address, default_action=..., connect_timeout=...,
    /// command_timeout=..., content_timeout=... }`.
    pub fn parse(
        list: &str,
        default_action: DefaultAction,
        timeouts: Timeouts,
        macros: MacroLists,
        protocol: u32,
    ) -> Result<MilterSettings, String> {
        let mut milters = Vec::new();
        for entry in split_list(list) {
            let inner = entry.trim_start_matches('{').trim_end_matches('}');
            let mut parts = inner
                .split([',', ' ', '\t'])
                .map(str::trim)
                .filter(|p| !p.is_empty());
            let Some(addr) = parts.next() else { continue };
            let mut spec = MilterSpec {
                name: addr.to_string(),
                addr: Addr::parse(addr)?,
                default_action,
                timeouts,
                protocol,
            };
            for p in parts {
                let (n, v) = p
                    .split_once('=')
                    .ok_or_else(|| format!("milter {addr}: bad setting {p}"))?;
                match n.trim() {
                    "default_action" => spec.default_action = DefaultAction::parse(v)?,
                    "connect_timeout" => spec.timeouts.connect = parse_time(v)?,
                    "command_timeout" => spec.timeouts.command = parse_time(v)?,
                    "content_timeout" => spec.timeouts.content = parse_time(v)?,
                    "protocol" => spec.protocol = parse_protocol(v)?,
                    other => return Err(format!("milter {addr}: unknown setting {other}")),
                }
            }
            milters.push(spec);
        }
        Ok(MilterSettings {
            milters,
            macros,
            ..MilterSettings::default()
        })
    }
}

/// Builds the settings of one milter list from main.cf values: `list` names the list
/// parameter (`smtpd_milters`, `non_smtpd_milters`); `get` returns an expanded parameter
/// value. `no_milters` in `receive_override_options` or an empty list: no milters.
pub fn load(
    list: &str,
    get: &dyn Fn(&str) -> Result<String, String>,
) -> Result<MilterSettings, String> {
    let overrides = get("receive_override_options")?.to_ascii_lowercase();
    if overrides.split([' ', ',', '\t']).any(|w| w == "no_milters") {
        return Ok(MilterSettings::default());
    }
    let value = get(list)?;
    if value.trim().is_empty() {
        return Ok(MilterSettings::default());
    }
    let words = |n: &str| -> Result<Vec<String>, String> {
        Ok(get(n)?.split_whitespace().map(str::to_string).collect())
    };
    let macros = vec![
        (Stage::Connect, words("milter_connect_macros")?),
        (Stage::Helo, words("milter_helo_macros")?),
        (Stage::Mail, words("milter_mail_macros")?),
        (Stage::Rcpt, words("milter_rcpt_macros")?),
        (Stage::Data, words("milter_data_macros")?),
        (Stage::Eoh, words("milter_end_of_header_macros")?),
        (Stage::Eom, words("milter_end_of_data_macros")?),
    ];
    let time = |n: &str| parse_time(&get(n)?).map_err(|e| format!("parameter {n}: {e}"));
    let timeouts = Timeouts {
        connect: time("milter_connect_timeout")?,
        command: time("milter_command_timeout")?,
        content: time("milter_content_timeout")?,
    };
    let action = DefaultAction::parse(&get("milter_default_action")?)?;
    let protocol = parse_protocol(&get("milter_protocol")?)?;
    let mut s = MilterSettings::parse(&value, action, timeouts, macros, protocol)
        .map_err(|e| format!("parameter {list}: {e}"))?;
    s.daemon_name = get("milter_macro_daemon_name")?;
    s.v = get("milter_macro_v")?;
    s.macro_defaults = parse_macro_defaults(&get("milter_macro_defaults")?);
    Ok(s)
}

/// `milter_macro_defaults`: `name=value` pairs separated by white space or commas (a
/// `{ name = value with spaces }` group keeps its spaces).
pub fn parse_macro_defaults(v: &str) -> Vec<(String, String)> {
    split_list(v)
        .into_iter()
        .filter_map(|e| {
            let e = e.trim_start_matches('{').trim_end_matches('}');
            let (n, v) = e.split_once('=')?;
            let n = n.trim();
            (!n.is_empty()).then(|| (n.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The transaction as the milters see it.
pub struct Transaction<'a> {
    pub client_name: &'a str,
    pub family: Family,
    pub helo: Option<&'a str>,
    /// `<sender>` then ESMTP parameters.
    pub mail: Vec<String>,
    /// Each `<recipient>` then its parameters.
    pub rcpts: Vec<Vec<String>>,
    /// The message (CRLF lines), headers first.
    pub message: &'a [u8],
    /// Macro values by name; `{rcpt_addr}` is asked for per recipient through `rcpt`.
    pub macros: &'a dyn Fn(&str) -> Option<String>,
}

/// What the milters decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Queue the message: apply `mods` (in order; `leadspc` per entry says how header
    /// values are given); `quarantine` holds it.
    Accept {
        mods: Vec<(Modification, bool)>,
        quarantine: Option<String>,
    },
    /// Refuse with this SMTP reply (`550 5.7.1 ...` or `451 4.7.1 ...`).
    Refuse(String),
    /// Say 250 and drop the message.
    Discard,
}

/// A warning to log (the caller adds the queue id).
pub type Warnings = Vec<String>;

fn reply_text(r: &Reply, stage: &str) -> Option<Verdict> {
    Some(match r {
        Reply::Continue | Reply::Accept => return None,
        Reply::Reject => Verdict::Refuse(format!("550 5.7.1 {stage} rejected")),
        Reply::Tempfail => {
            Verdict::Refuse("451 4.7.1 Service unavailable - try again later".into())
        }
        Reply::Discard => Verdict::Discard,
        Reply::Code(c) => {
            let code = c.get(..1).unwrap_or("");
            if code == "4" || code == "5" {
                Verdict::Refuse(c.clone())
            } else {
                Verdict::Refuse("451 4.7.1 Service unavailable - try again later".into())
            }
        }
    })
}

/// The per-milter part: `Ok(None)` continue with the next milter, `Ok(Some)` decided.
fn one(
    spec: &MilterSpec,
    macros: &MacroLists,
    t: &Transaction<'_>,
    mods: &mut Vec<(Modification, bool)>,
    quarantine: &mut Option<String>,
) -> Result<Option<Verdict>, Error> {
    let mut m = Milter::open(&spec.addr, spec.timeouts, macros, spec.protocol)?;
    let leadspc = m.steps & step::HDR_LEADSPC != 0;
    let look = t.macros;
    macro_rules! check {
        ($e:expr, $stage:expr) => {
            match $e {
                Reply::Accept => {
                    m.quit();
                    return Ok(None);
                }
                r => {
                    if let Some(v) = reply_text(&r, $stage) {
                        m.quit();
                        return Ok(Some(v));
                    }
                }
            }
        };
    }
    check!(
        m.connect(t.client_name, t.family.clone(), look)?,
        "Connection"
    );
    if let Some(h) = t.helo {
        check!(m.helo(h, look)?, "Helo command");
    }
    check!(m.mail(t.mail.clone(), look)?, "Sender address");
    for r in &t.rcpts {
        let addr = r
            .first()
            .map(|a| a.trim_start_matches('<').trim_end_matches('>').to_string())
            .unwrap_or_default();
        let per = |n: &str| {
            if n == "{rcpt_addr}" {
                Some(addr.clone())
            } else {
                look(n)
            }
        };
        check!(m.rcpt(r.clone(), &per)?, "Recipient address");
    }
    check!(m.data(look)?, "Data command");
    let (headers, body) = crate::edit::split(t.message);
    for h in &headers {
        check!(m.header(&h.name, &h.value)?, "Message content");
    }
    check!(m.eoh(look)?, "Message content");
    check!(m.body(&body)?, "Message content");
    let (reply, got) = m.eom(look)?;
    m.quit();
    if let Some(v) = reply_text(&reply, "Message content") {
        return Ok(Some(v));
    }
    for g in got {
        match g {
            Response::Quarantine(why) => *quarantine = Some(why),
            other => mods.push((other, leadspc)),
        }
    }
    Ok(None)
}

/// Runs the transaction past every milter (see the module documentation).
pub fn run(settings: &MilterSettings, t: &Transaction<'_>) -> (Verdict, Warnings) {
    let mut warnings = Vec::new();
    let mut mods = Vec::new();
    let mut quarantine = None;
    for spec in &settings.milters {
        match one(spec, &settings.macros, t, &mut mods, &mut quarantine) {
            Ok(None) => {}
            Ok(Some(v)) => return (v, warnings),
            Err(e) => {
                warnings.push(format!(
                    "milter {}: {e}; default_action={}",
                    spec.name,
                    match spec.default_action {
                        DefaultAction::Accept => "accept",
                        DefaultAction::Tempfail => "tempfail",
                        DefaultAction::Reject => "reject",
                        DefaultAction::Quarantine => "quarantine",
                    }
                ));
                match spec.default_action {
                    DefaultAction::Accept => {}
                    DefaultAction::Tempfail => {
                        return (
                            Verdict::Refuse(
                                "451 4.7.1 Service unavailable - try again later".into(),
                            ),
                            warnings,
                        );
                    }
                    DefaultAction::Reject => {
                        return (
                            Verdict::Refuse("550 5.7.1 Command rejected".into()),
                            warnings,
                        );
                    }
                    DefaultAction::Quarantine => {
                        quarantine = Some("milter triggers quarantine action".into());
                    }
                }
            }
        }
    }
    (Verdict::Accept { mods, quarantine }, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::action;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    fn read_packet(s: &mut impl Read) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut b).ok()?;
        Some(b)
    }

    /// A fake milter: negotiates, answers `c` to everything, and at end of message sends
    /// `eom` (raw packets). Records the commands it saw.
    fn fake(
        eom: Vec<Vec<u8>>,
        garbage: bool,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<Vec<u8>>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut seen = Vec::new();
            while let Some(p) = read_packet(&mut s) {
                seen.push(p[0]);
                let out: Vec<Vec<u8>> = match p[0] {
                    b'O' if garbage => vec![b"\0\0\0\x01Z".to_vec()],
                    b'O' => vec![
                        Response::OptNeg {
                            version: 6,
                            actions: action::ALL,
                            steps: 0,
                            macros: vec![],
                        }
                        .encode(),
                    ],
                    b'D' | b'A' => vec![],
                    b'Q' => break,
                    b'E' => eom.clone(),
                    _ => vec![Response::Continue.encode()],
                };
                for o in out {
                    if s.write_all(&o).is_err() {
                        break;
                    }
                }
            }
            seen
        });
        (dir, path, h)
    }

    fn settings(path: &std::path::Path, da: DefaultAction) -> MilterSettings {
        MilterSettings {
            milters: vec![MilterSpec {
                name: "test".into(),
                addr: Addr::Unix(path.to_path_buf()),
                default_action: da,
                protocol: 6,
                timeouts: Timeouts {
                    connect: Duration::from_secs(2),
                    command: Duration::from_secs(2),
                    content: Duration::from_secs(2),
                },
            }],
            macros: crate::default_macros(),
            ..MilterSettings::default()
        }
    }

    fn txn(msg: &[u8]) -> Transaction<'_> {
        Transaction {
            client_name: "localhost",
            family: Family::Inet4 {
                port: 1234,
                addr: "127.0.0.1".into(),
            },
            helo: Some("client"),
            mail: vec!["<a@b>".into()],
            rcpts: vec![vec!["<c@d>".into()]],
            message: msg,
            macros: &|n| (n == "i").then(|| "QID".to_string()),
        }
    }

    #[test]
    fn modifications_and_reply() {
        let add = Response::AddHeader {
            name: "X-Milter".into(),
            value: "yes".into(),
        };
        let (_d, p, h) = fake(vec![add.encode(), Response::Accept.encode()], false);
        let (v, w) = run(
            &settings(&p, DefaultAction::Tempfail),
            &txn(b"Subject: x\r\n\r\nbody\r\n"),
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            v,
            Verdict::Accept {
                mods: vec![(add, false)],
                quarantine: None
            }
        );
        let seen = h.join().expect("join");
        assert_eq!(String::from_utf8(seen).expect("ascii"), "OCHDMDRDTLDNBDEQ");
    }

    #[test]
    fn replycode_and_garbage_and_down() {
        let (_d, p, h) = fake(
            vec![Response::ReplyCode("554 5.7.1 nope".into()).encode()],
            false,
        );
        let (v, _) = run(&settings(&p, DefaultAction::Tempfail), &txn(b"\r\nb"));
        assert_eq!(v, Verdict::Refuse("554 5.7.1 nope".into()));
        h.join().expect("join");
        let (_d, p, h) = fake(vec![], true);
        let (v, w) = run(&settings(&p, DefaultAction::Reject), &txn(b"\r\nb"));
        assert_eq!(v, Verdict::Refuse("550 5.7.1 Command rejected".into()));
        assert!(w[0].contains("milter test: protocol error"), "{w:?}");
        h.join().expect("join");
        let missing = std::path::Path::new("/nonexistent/m.sock");
        let (v, w) = run(&settings(missing, DefaultAction::Accept), &txn(b"\r\nb"));
        assert!(matches!(v, Verdict::Accept { .. }) && w.len() == 1);
    }
}

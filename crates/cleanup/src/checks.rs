//! `header_checks` and `body_checks`: each logical header (continuation lines joined with
//! a newline, line ends removed) or body line is looked up in the tables, and the first
//! table that answers gives an action, as in Postfix's header_checks(5):
//!
//! | action | effect |
//! |---|---|
//! | `REJECT [text]` | the whole message is refused (`550 5.7.1 text`, or `4.x.x` text: `451`) |
//! | `HOLD [text]` | the message goes to the `hold` queue |
//! | `DISCARD [text]` | the message is accepted and thrown away |
//! | `WARN [text]`, `INFO [text]` | logged only |
//! | `IGNORE` | the header or line is deleted |
//! | `REPLACE text` | the header or line is replaced by `text` |
//! | `PREPEND text` | `text` is inserted before it |
//! | `DUNNO`, `OK` | nothing |
//!
//! `REJECT` and `DISCARD` end the checks for the message; a later `HOLD` after a `HOLD` is
//! idempotent. Actions oxipost does not implement (`FILTER`, `REDIRECT`, `BCC`) are logged
//! as warnings and otherwise ignored; an unknown action is a warning too. A table that
//! cannot answer defers the message (`451 4.3.0`).
//!
//! `milter_header_checks` ([`Checks::milter_header`]) applies the same tables to the
//! headers milters add or change, where `FILTER` and `REDIRECT` are honoured too.

use oxipost_maps::Maps;
use oxipost_milter::Modification;

/// What a matched line asks for, after parsing the table value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `REJECT`: the reply text with its DSN code (`5.7.1 message content rejected`).
    Reject(String),
    Hold(String),
    Discard(String),
    Warn(String),
    Info(String),
    Ignore,
    Replace(String),
    Prepend(String),
    Dunno,
    /// An action we do not implement, or an unknown one: (name, warning text).
    Unsupported(String),
}

/// The generic text of `REJECT` without text.
pub const DEFAULT_REJECT: &str = "5.7.1 message content rejected";

/// A DSN code at the start of `text` (`5.7.1`, `4.2.0`).
fn has_dsn(text: &str) -> bool {
    let w = text.split_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = w.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a table value into an action.
pub fn parse_action(value: &str) -> Action {
    let value = value.trim();
    let (cmd, text) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&value[..i], value[i..].trim()),
        None => (value, ""),
    };
    match cmd.to_ascii_uppercase().as_str() {
        "REJECT" => Action::Reject(if text.is_empty() {
            DEFAULT_REJECT.to_string()
        } else if has_dsn(text) {
            text.to_string()
        } else {
            format!("5.7.1 {text}")
        }),
        "HOLD" => Action::Hold(text.to_string()),
        "DISCARD" => Action::Discard(text.to_string()),
        "WARN" => Action::Warn(text.to_string()),
        "INFO" => Action::Info(text.to_string()),
        "IGNORE" => Action::Ignore,
        "REPLACE" if !text.is_empty() => Action::Replace(text.to_string()),
        "PREPEND" if !text.is_empty() => Action::Prepend(text.to_string()),
        "REPLACE" | "PREPEND" => Action::Unsupported(format!("{cmd} action without text")),
        "DUNNO" | "OK" => Action::Dunno,
        "FILTER" | "REDIRECT" | "BCC" | "PASS" | "STRIP" => {
            Action::Unsupported(format!("{cmd} action is not supported; ignored"))
        }
        _ => Action::Unsupported(format!("unknown command in table: {value}")),
    }
}

/// One table list for header or body checks.
#[derive(Debug, Default)]
pub struct Checks {
    pub maps: Maps,
}

impl Checks {
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The action for one line (`Ok(None)`: no table matched). `Err`: temporary failure.
    pub fn check(&self, line: &str) -> Result<Option<Action>, String> {
        if self.maps.is_empty() {
            return Ok(None);
        }
        match self.maps.lookup(line) {
            Ok(Some(v)) => Ok(Some(parse_action(&v))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.message),
        }
    }
}

/// What `milter_header_checks` decided about one header a milter added or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterHeader {
    /// Keep it as the milter gave it.
    Keep,
    /// Keep this text instead (`REPLACE`).
    Replace(String),
    /// Drop the header (`IGNORE`).
    Drop,
    /// `REJECT` (DSN code and text), `DISCARD`, `HOLD`: for the whole message.
    Reject(String),
    Discard(String),
    Hold(String),
    /// `FILTER transport:destination`, `REDIRECT user@domain`: recorded for qmgr.
    Filter(String),
    Redirect(String),
    /// `WARN`/`INFO` text, or a warning about an action that does not apply here.
    Log(&'static str, String),
}

impl Checks {
    /// `milter_header_checks` for one header line (`Name: value`) a milter added or
    /// changed (Postfix's header_checks(5) actions; `PREPEND` is not implemented, as in
    /// Postfix). `Err`: the table could not answer.
    pub fn milter_header(&self, line: &str) -> Result<MilterHeader, String> {
        if self.maps.is_empty() {
            return Ok(MilterHeader::Keep);
        }
        let value = match self.maps.lookup(line) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(MilterHeader::Keep),
            Err(e) => return Err(e.message),
        };
        let v = value.trim();
        let (cmd, text) = v
            .split_once(|c: char| c.is_ascii_whitespace())
            .map_or((v, ""), |(c, t)| (c, t.trim()));
        Ok(match cmd.to_ascii_uppercase().as_str() {
            "FILTER" if text.contains(':') => MilterHeader::Filter(text.to_string()),
            "REDIRECT" if text.contains('@') => MilterHeader::Redirect(text.to_string()),
            _ => match parse_action(v) {
                Action::Reject(t) => MilterHeader::Reject(t),
                Action::Hold(t) => MilterHeader::Hold(t),
                Action::Discard(t) => MilterHeader::Discard(t),
                Action::Warn(t) => MilterHeader::Log("warning", t),
                Action::Info(t) => MilterHeader::Log("info", t),
                Action::Ignore => MilterHeader::Drop,
                Action::Replace(t) => MilterHeader::Replace(t),
                Action::Dunno => MilterHeader::Keep,
                Action::Prepend(_) => MilterHeader::Log(
                    "warning",
                    "PREPEND action in milter_header_checks is not implemented".into(),
                ),
                Action::Unsupported(w) => MilterHeader::Log("warning", w),
            },
        })
    }
}

/// Opens `milter_header_checks`.
pub fn milter_header_checks(cfg: &oxipost_config::Config) -> Result<Checks, String> {
    let v = cfg
        .get("milter_header_checks")
        .map_err(|e| format!("parameter milter_header_checks: {e}"))?;
    let maps = Maps::open(&v, &oxipost_maps::MapConfig::default())
        .map_err(|e| format!("parameter milter_header_checks: {}", e.message))?;
    Ok(Checks { maps })
}

/// What `milter_header_checks` made of the milters' header modifications.
#[derive(Debug, Default)]
pub struct HeaderVerdict {
    /// The modifications to apply (some dropped or replaced).
    pub mods: Vec<(Modification, bool)>,
    /// `REJECT` text (DSN code first), `DISCARD`, `HOLD`, `FILTER`, `REDIRECT`.
    pub reject: Option<String>,
    pub discard: bool,
    pub hold: Option<String>,
    pub filter: Option<String>,
    pub redirect: Option<String>,
    /// The table could not answer: defer the message.
    pub defer: Option<String>,
    /// (action, header, text) for the log, in Postfix's header_checks form.
    pub events: Vec<(String, String, String)>,
}

/// Applies `milter_header_checks` to every header a milter adds or changes.
pub fn check_milter_headers(checks: &Checks, mods: Vec<(Modification, bool)>) -> HeaderVerdict {
    let mut v = HeaderVerdict::default();
    for (m, leadspc) in mods {
        let (name, value) = match &m {
            Modification::AddHeader { name, value }
            | Modification::InsertHeader { name, value, .. }
            | Modification::ChangeHeader { name, value, .. }
                if !value.is_empty() =>
            {
                (name.clone(), value.clone())
            }
            _ => {
                v.mods.push((m, leadspc));
                continue;
            }
        };
        let sep = if leadspc { ":" } else { ": " };
        let line = format!("{name}{sep}{value}");
        let shown = line.replace(['\r', '\n'], " ");
        match checks.milter_header(&line) {
            Err(e) => {
                v.defer.get_or_insert(e);
                v.mods.push((m, leadspc));
            }
            Ok(MilterHeader::Keep) => v.mods.push((m, leadspc)),
            Ok(MilterHeader::Drop) => v.events.push(("ignore".into(), shown, String::new())),
            Ok(MilterHeader::Replace(text)) => {
                let (n, val) = text.split_once(':').unwrap_or((text.as_str(), ""));
                let (n, val) = (n.trim().to_string(), val.trim_start().to_string());
                let val = if leadspc { format!(" {val}") } else { val };
                v.events.push(("replace".into(), shown, text.clone()));
                v.mods.push((
                    match m {
                        Modification::AddHeader { .. } => Modification::AddHeader {
                            name: n,
                            value: val,
                        },
                        Modification::InsertHeader { index, .. } => Modification::InsertHeader {
                            index,
                            name: n,
                            value: val,
                        },
                        Modification::ChangeHeader { index, .. } => Modification::ChangeHeader {
                            index,
                            name: n,
                            value: val,
                        },
                        other => other,
                    },
                    leadspc,
                ));
            }
            Ok(MilterHeader::Reject(t)) => {
                v.events.push(("reject".into(), shown, t.clone()));
                v.reject.get_or_insert(t);
            }
            Ok(MilterHeader::Discard(t)) => {
                v.events.push(("discard".into(), shown, t));
                v.discard = true;
            }
            Ok(MilterHeader::Hold(t)) => {
                v.events.push(("hold".into(), shown, t.clone()));
                v.hold.get_or_insert(t);
                v.mods.push((m, leadspc));
            }
            Ok(MilterHeader::Filter(t)) => {
                v.events.push(("filter".into(), shown, t.clone()));
                v.filter = Some(t);
                v.mods.push((m, leadspc));
            }
            Ok(MilterHeader::Redirect(t)) => {
                v.events.push(("redirect".into(), shown, t.clone()));
                v.redirect = Some(t);
                v.mods.push((m, leadspc));
            }
            Ok(MilterHeader::Log(level, t)) => {
                v.events.push((level.into(), shown, t));
                v.mods.push((m, leadspc));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert_eq!(
            parse_action("REJECT"),
            Action::Reject(DEFAULT_REJECT.into())
        );
        assert_eq!(
            parse_action("reject no spam"),
            Action::Reject("5.7.1 no spam".into())
        );
        assert_eq!(
            parse_action("REJECT 4.7.0 later"),
            Action::Reject("4.7.0 later".into())
        );
        assert_eq!(parse_action("HOLD"), Action::Hold(String::new()));
        assert_eq!(
            parse_action("PREPEND X-Seen: yes"),
            Action::Prepend("X-Seen: yes".into())
        );
        assert_eq!(parse_action("IGNORE"), Action::Ignore);
        assert_eq!(parse_action("dunno"), Action::Dunno);
        assert!(matches!(parse_action("FROB"), Action::Unsupported(_)));
        assert!(matches!(parse_action("REPLACE"), Action::Unsupported(_)));
    }

    #[test]
    fn milter_header_actions() {
        let cfg = oxipost_maps::MapConfig::default();
        let c = Checks {
            maps: Maps::open(
                "inline:{ {X-Spam: yes=REJECT spam}, {X-Scan: dirty=FILTER smtp:[127.0.0.1]:10025}, {X-Drop: me=IGNORE} }",
                &cfg,
            )
            .expect("inline"),
        };
        assert_eq!(
            c.milter_header("X-Spam: yes"),
            Ok(MilterHeader::Reject("5.7.1 spam".into()))
        );
        assert_eq!(
            c.milter_header("X-Scan: dirty"),
            Ok(MilterHeader::Filter("smtp:[127.0.0.1]:10025".into()))
        );
        assert_eq!(c.milter_header("X-Drop: me"), Ok(MilterHeader::Drop));
        assert_eq!(c.milter_header("X-Other: 1"), Ok(MilterHeader::Keep));
        assert_eq!(
            Checks::default().milter_header("X-Spam: yes"),
            Ok(MilterHeader::Keep)
        );
    }
}

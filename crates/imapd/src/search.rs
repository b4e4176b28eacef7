//! SEARCH keys (RFC 3501 6.4.4): parsed from the command's arguments into a [`Key`]
//! tree, evaluated per message against the index (flags, dates, sizes, UIDs) and, for
//! header and text keys, the message itself (read only when a key needs it).

use oxipost_store::{Flags, Mailbox, Message};

use crate::fetch;
use crate::parse::{Value, sequence_set};

/// A search key.
#[derive(Debug, Clone)]
pub enum Key {
    All,
    Flag(Flags, bool),
    Keyword(String, bool),
    Recent(bool),
    New,
    Header(String, String),
    Body(String),
    Text(String),
    /// Internal date: (days, -1 before / 0 on / 1 since).
    Date(i64, i8),
    SentDate(i64, i8),
    Larger(u64),
    Smaller(u64),
    Seq(String),
    Uid(String),
    /// SEARCHRES `$`: the saved result.
    Saved,
    /// CONDSTORE: MODSEQ at least this.
    ModSeq(u64),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
}

impl Key {
    /// Whether a MODSEQ key is in the tree (the reply then carries the highest MODSEQ).
    pub fn uses_modseq(&self) -> bool {
        match self {
            Key::ModSeq(_) => true,
            Key::Not(k) => k.uses_modseq(),
            Key::Or(a, b) => a.uses_modseq() || b.uses_modseq(),
            Key::And(v) => v.iter().any(Key::uses_modseq),
            _ => false,
        }
    }

    /// Whether the key looks at internal dates or sizes (computed on first need, see
    /// [`Message::internal_date`]: the caller fills them in before [`eval`]).
    pub fn uses_date_or_size(&self) -> bool {
        match self {
            Key::Date(..) | Key::SentDate(..) | Key::Larger(_) | Key::Smaller(_) => true,
            Key::Not(k) => k.uses_date_or_size(),
            Key::Or(a, b) => a.uses_date_or_size() || b.uses_date_or_size(),
            Key::And(v) => v.iter().any(Key::uses_date_or_size),
            _ => false,
        }
    }
}

/// Parses all arguments as one AND of keys.
pub fn parse(args: &[Value]) -> Result<Key, &'static str> {
    let mut it = args.iter();
    let mut keys = Vec::new();
    while let Some(k) = one(&mut it, 0)? {
        keys.push(k);
    }
    if keys.is_empty() {
        return Err("Missing search parameters");
    }
    Ok(Key::And(keys))
}

fn one<'a>(
    it: &mut impl Iterator<Item = &'a Value>,
    depth: usize,
) -> Result<Option<Key>, &'static str> {
    if depth > 32 {
        return Err("Too deep nesting");
    }
    let Some(v) = it.next() else { return Ok(None) };
    let atom = match v {
        Value::List(l) => {
            let mut inner = l.iter();
            let mut keys = Vec::new();
            while let Some(k) = one(&mut inner, depth + 1)? {
                keys.push(k);
            }
            return Ok(Some(Key::And(keys)));
        }
        Value::Str(_) => return Err("Unknown argument"),
        Value::Atom(a) => a.to_ascii_uppercase(),
    };
    let mut arg = || -> Result<String, &'static str> {
        it.next().and_then(Value::text).ok_or("Missing argument")
    };
    let date = |s: String| fetch::search_date(&s).ok_or("Invalid date");
    let num = |s: String| s.parse::<u64>().map_err(|_| "Invalid number");
    let f = |fl, on| Ok(Some(Key::Flag(fl, on)));
    match atom.as_str() {
        "ALL" => Ok(Some(Key::All)),
        "ANSWERED" => f(Flags::ANSWERED, true),
        "DELETED" => f(Flags::DELETED, true),
        "DRAFT" => f(Flags::DRAFT, true),
        "FLAGGED" => f(Flags::FLAGGED, true),
        "SEEN" => f(Flags::SEEN, true),
        "UNANSWERED" => f(Flags::ANSWERED, false),
        "UNDELETED" => f(Flags::DELETED, false),
        "UNDRAFT" => f(Flags::DRAFT, false),
        "UNFLAGGED" => f(Flags::FLAGGED, false),
        "UNSEEN" => f(Flags::SEEN, false),
        "RECENT" => Ok(Some(Key::Recent(true))),
        "OLD" => Ok(Some(Key::Recent(false))),
        "NEW" => Ok(Some(Key::New)),
        "KEYWORD" => Ok(Some(Key::Keyword(arg()?, true))),
        "UNKEYWORD" => Ok(Some(Key::Keyword(arg()?, false))),
        "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => Ok(Some(Key::Header(atom.clone(), arg()?))),
        "HEADER" => {
            let h = arg()?;
            Ok(Some(Key::Header(h, arg()?)))
        }
        "BODY" => Ok(Some(Key::Body(arg()?))),
        "TEXT" => Ok(Some(Key::Text(arg()?))),
        "BEFORE" => Ok(Some(Key::Date(date(arg()?)?, -1))),
        "ON" => Ok(Some(Key::Date(date(arg()?)?, 0))),
        "SINCE" => Ok(Some(Key::Date(date(arg()?)?, 1))),
        "SENTBEFORE" => Ok(Some(Key::SentDate(date(arg()?)?, -1))),
        "SENTON" => Ok(Some(Key::SentDate(date(arg()?)?, 0))),
        "SENTSINCE" => Ok(Some(Key::SentDate(date(arg()?)?, 1))),
        "LARGER" => Ok(Some(Key::Larger(num(arg()?)?))),
        "SMALLER" => Ok(Some(Key::Smaller(num(arg()?)?))),
        "MODSEQ" => {
            // An optional entry name and type (RFC 7162) precede the number.
            let mut v = arg()?;
            if v.starts_with('"') || v.starts_with('/') {
                arg()?;
                v = arg()?;
            }
            Ok(Some(Key::ModSeq(num(v)?)))
        }
        "UID" => {
            let s = arg()?;
            if s == "$" {
                return Ok(Some(Key::Saved));
            }
            sequence_set(&s, 1).ok_or("Invalid UID set")?;
            Ok(Some(Key::Uid(s)))
        }
        "$" => Ok(Some(Key::Saved)),
        "NOT" => Ok(Some(Key::Not(Box::new(
            one(it, depth + 1)?.ok_or("Missing key")?,
        )))),
        "OR" => {
            let a = one(it, depth + 1)?.ok_or("Missing key")?;
            let b = one(it, depth + 1)?.ok_or("Missing key")?;
            Ok(Some(Key::Or(Box::new(a), Box::new(b))))
        }
        _ if sequence_set(&atom, 1).is_some() => Ok(Some(Key::Seq(atom))),
        _ => Err("Unknown argument"),
    }
}

/// What a key is evaluated against.
pub struct Ctx<'a> {
    pub seq: u32,
    pub star_seq: u32,
    pub star_uid: u32,
    pub msg: &'a Message,
    pub recent: bool,
    pub mbox: &'a Mailbox,
    /// SEARCHRES's saved UIDs, sorted.
    pub saved: &'a [u32],
}

fn in_set(set: &str, n: u32, star: u32) -> bool {
    sequence_set(set, star.max(1)).is_some_and(|r| r.iter().any(|&(a, b)| (a..=b).contains(&n)))
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.to_lowercase();
    if n.is_empty() {
        return true;
    }
    String::from_utf8_lossy(hay).to_lowercase().contains(&n)
}

fn cmp_day(day: i64, want: i64, how: i8) -> bool {
    match how {
        -1 => day < want,
        0 => day == want,
        _ => day >= want,
    }
}

/// Whether the message matches; `raw` caches its contents (CRLF form) once read.
pub fn eval(k: &Key, c: &Ctx<'_>, raw: &mut Option<Vec<u8>>) -> bool {
    let body = |raw: &mut Option<Vec<u8>>| -> Vec<u8> {
        if raw.is_none() {
            *raw = Some(c.mbox.read(c.msg).map(fetch::to_crlf).unwrap_or_default());
        }
        raw.clone().unwrap_or_default()
    };
    let split = |data: &[u8]| -> usize {
        data.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(data.len(), |p| p + 4)
    };
    // Filled in by the caller (`uses_date_or_size`); computed here only as a fallback.
    let date_size = || {
        c.mbox
            .date_and_size(c.msg)
            .unwrap_or((c.msg.internal_date.unwrap_or(0), c.msg.size.unwrap_or(0)))
    };
    match k {
        Key::All => true,
        Key::Flag(f, on) => c.msg.flags.contains(*f) == *on,
        Key::Keyword(kw, on) => c.msg.keywords.iter().any(|x| x.eq_ignore_ascii_case(kw)) == *on,
        Key::Recent(on) => c.recent == *on,
        Key::New => c.recent && !c.msg.flags.contains(Flags::SEEN),
        Key::Header(name, s) => {
            let d = body(raw);
            let h = &d[..split(&d)];
            fetch::raw_header(h, name).is_some_and(|v| contains(v.as_bytes(), s))
        }
        Key::Body(s) => {
            let d = body(raw);
            contains(&d[split(&d)..], s)
        }
        Key::Text(s) => contains(&body(raw), s),
        Key::Date(day, how) => cmp_day(date_size().0.div_euclid(86_400), *day, *how),
        Key::SentDate(day, how) => {
            let d = body(raw);
            let sent = fetch::parse_message(&d)
                .and_then(|m| m.date().map(|t| t.to_timestamp()))
                .unwrap_or_else(|| date_size().0);
            cmp_day(sent.div_euclid(86_400), *day, *how)
        }
        Key::Larger(n) => date_size().1 > *n,
        Key::Smaller(n) => date_size().1 < *n,
        Key::Seq(s) => in_set(s, c.seq, c.star_seq),
        Key::Uid(s) => in_set(s, c.msg.uid, c.star_uid),
        Key::Saved => c.saved.binary_search(&c.msg.uid).is_ok(),
        Key::ModSeq(n) => c.msg.modseq >= *n,
        Key::Not(k) => !eval(k, c, raw),
        Key::Or(a, b) => eval(a, c, raw) || eval(b, c, raw),
        Key::And(v) => v.iter().all(|k| eval(k, c, raw)),
    }
}

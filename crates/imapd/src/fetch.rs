//! FETCH data: the items a client may ask for, ENVELOPE and BODYSTRUCTURE built from
//! `mail-parser`'s MIME tree, body sections (`BODY[1.2.HEADER.FIELDS (FROM)]<0.100>`)
//! cut from the message by that tree's offsets, and IMAP's date formats.
//!
//! Messages are served with CRLF line ends (Maildir files usually hold LF); sizes and
//! offsets refer to that CRLF form, which is also what the index stores as the size.

use std::borrow::Cow;

use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use crate::parse::{Value, astring};

/// One FETCH item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Flags,
    InternalDate,
    Size,
    Envelope,
    BodyStructure,
    /// `BODY` without a section: the structure without extension data.
    Body,
    Uid,
    /// CONDSTORE's per-message MODSEQ.
    ModSeq,
    Section {
        /// What the response calls it (`BODY[HEADER]<0>`, `RFC822`...).
        label: String,
        peek: bool,
        part: Vec<u32>,
        text: SectionText,
        partial: Option<(u64, u64)>,
    },
    /// `BINARY[part]<partial>` (RFC 3516): the part with its transfer encoding undone.
    Binary {
        label: String,
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u64, u64)>,
    },
    /// `BINARY.SIZE[part]`: the decoded size.
    BinarySize {
        part: Vec<u32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SectionText {
    Full,
    Header,
    Fields { names: Vec<String>, not: bool },
    Text,
    Mime,
}

impl Item {
    /// Whether the item needs the message contents.
    pub fn needs_body(&self) -> bool {
        matches!(
            self,
            Item::Envelope
                | Item::BodyStructure
                | Item::Body
                | Item::Section { .. }
                | Item::Binary { .. }
                | Item::BinarySize { .. }
        )
    }
}

/// Parses the FETCH attribute argument (one atom, a macro, or a list).
pub fn items(v: &Value) -> Option<Vec<Item>> {
    let list: Vec<&Value> = match v {
        Value::List(l) => l.iter().collect(),
        Value::Atom(a) => match a.to_ascii_uppercase().as_str() {
            "ALL" => {
                return Some(vec![
                    Item::Flags,
                    Item::InternalDate,
                    Item::Size,
                    Item::Envelope,
                ]);
            }
            "FAST" => return Some(vec![Item::Flags, Item::InternalDate, Item::Size]),
            "FULL" => {
                return Some(vec![
                    Item::Flags,
                    Item::InternalDate,
                    Item::Size,
                    Item::Envelope,
                    Item::Body,
                ]);
            }
            _ => vec![v],
        },
        Value::Str(_) => return None,
    };
    let mut out = Vec::new();
    for v in list {
        let Value::Atom(a) = v else { return None };
        out.push(item(a)?);
    }
    (!out.is_empty()).then_some(out)
}

fn item(a: &str) -> Option<Item> {
    let up = a.to_ascii_uppercase();
    let simple = match up.as_str() {
        "FLAGS" => Some(Item::Flags),
        "INTERNALDATE" => Some(Item::InternalDate),
        "RFC822.SIZE" => Some(Item::Size),
        "ENVELOPE" => Some(Item::Envelope),
        "BODYSTRUCTURE" => Some(Item::BodyStructure),
        "BODY" => Some(Item::Body),
        "UID" => Some(Item::Uid),
        "MODSEQ" => Some(Item::ModSeq),
        "RFC822" => Some(section("RFC822", false, vec![], SectionText::Full)),
        "RFC822.HEADER" => Some(section("RFC822.HEADER", true, vec![], SectionText::Header)),
        "RFC822.TEXT" => Some(section("RFC822.TEXT", false, vec![], SectionText::Text)),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    if let Some(b) = binary_item(&up) {
        return Some(b);
    }
    let (peek, rest) = if let Some(r) = up.strip_prefix("BODY.PEEK[") {
        (true, r)
    } else if let Some(r) = up.strip_prefix("BODY[") {
        (false, r)
    } else {
        return None;
    };
    let close = rest.rfind(']')?;
    let spec = &rest[..close];
    let after = &rest[close + 1..];
    let partial = if after.is_empty() {
        None
    } else {
        let inner = after.strip_prefix('<')?.strip_suffix('>')?;
        let (a, b) = inner.split_once('.')?;
        let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
        if b == 0 {
            return None;
        }
        Some((a, b))
    };
    // Part numbers, then an optional text specifier.
    let mut part = Vec::new();
    let mut text = spec;
    while let Some(c) = text.chars().next()
        && c.is_ascii_digit()
    {
        let end = text.find('.').unwrap_or(text.len());
        let n: u32 = text[..end].parse().ok().filter(|&n| n > 0)?;
        part.push(n);
        text = text.get(end + 1..).unwrap_or("");
    }
    let st = match text {
        "" => SectionText::Full,
        "HEADER" => SectionText::Header,
        "TEXT" => SectionText::Text,
        "MIME" if !part.is_empty() => SectionText::Mime,
        t => {
            let (not, list) = if let Some(l) = t.strip_prefix("HEADER.FIELDS.NOT ") {
                (true, l)
            } else if let Some(l) = t.strip_prefix("HEADER.FIELDS ") {
                (false, l)
            } else {
                return None;
            };
            let names: Vec<String> = list
                .strip_prefix('(')?
                .strip_suffix(')')?
                .split_whitespace()
                .map(|s| s.trim_matches('"').to_owned())
                .collect();
            if names.is_empty() {
                return None;
            }
            SectionText::Fields { names, not }
        }
    };
    let mut label = format!("BODY[{spec}]");
    if let Some((a, _)) = partial {
        label.push_str(&format!("<{a}>"));
    }
    Some(Item::Section {
        label,
        peek,
        part,
        text: st,
        partial,
    })
}

/// `BINARY[1.2]<0.10>`, `BINARY.PEEK[...]`, `BINARY.SIZE[...]`: part numbers only.
fn binary_item(up: &str) -> Option<Item> {
    let (kind, rest) = if let Some(r) = up.strip_prefix("BINARY.PEEK[") {
        (1, r)
    } else if let Some(r) = up.strip_prefix("BINARY.SIZE[") {
        (2, r)
    } else if let Some(r) = up.strip_prefix("BINARY[") {
        (0, r)
    } else {
        return None;
    };
    let (spec, after) = rest.split_once(']')?;
    let part = if spec.is_empty() {
        Vec::new()
    } else {
        spec.split('.')
            .map(|n| {
                (!n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse::<u32>().ok())
                    .flatten()
            })
            .collect::<Option<Vec<u32>>>()?
    };
    if kind == 2 {
        return after.is_empty().then_some(Item::BinarySize { part });
    }
    let partial = partial_of(after)?;
    let mut label = format!("BINARY[{spec}]");
    if let Some((a, _)) = partial {
        label.push_str(&format!("<{a}>"));
    }
    Some(Item::Binary {
        label,
        peek: kind == 1,
        part,
        partial,
    })
}

/// `<a.b>` after a section: `Some(None)` when absent, `None` when malformed.
fn partial_of(after: &str) -> Option<Option<(u64, u64)>> {
    if after.is_empty() {
        return Some(None);
    }
    let inner = after.strip_prefix('<')?.strip_suffix('>')?;
    let (a, b) = inner.split_once('.')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (b > 0).then_some(Some((a, b)))
}

/// The bytes of `BINARY[part]`: the whole message as it is for `[]`, a leaf part with its
/// Content-Transfer-Encoding undone (no charset conversion), a multipart or message part
/// as it is. `Err` for an encoding this server cannot undo (`[UNKNOWN-CTE]`).
pub fn binary_bytes(raw: &[u8], msg: Option<&Message<'_>>, part: &[u32]) -> Result<Vec<u8>, ()> {
    if part.is_empty() {
        return Ok(raw.to_vec());
    }
    let Some(msg) = msg else {
        return Ok(Vec::new());
    };
    let Some((m, idx, empty)) = find_part_in(msg, part) else {
        return Ok(Vec::new());
    };
    let Some(p) = m.parts.get(idx) else {
        return Ok(Vec::new());
    };
    if empty {
        return Ok(Vec::new());
    }
    let body = m
        .raw_message
        .get(p.offset_body as usize..p.offset_end as usize)
        .unwrap_or_default();
    if matches!(p.body, PartType::Multipart(_) | PartType::Message(_)) {
        return Ok(body.to_vec());
    }
    let f = RawFields::new(m, p);
    match transfer_encoding(f.get(HeaderName::ContentTransferEncoding).as_deref()).as_slice() {
        b"7bit" | b"8bit" | b"binary" => Ok(body.to_vec()),
        b"base64" => Ok(base64_lenient(body)),
        b"quoted-printable" => Ok(qp_decode(body)),
        _ => Err(()),
    }
}

/// Base64 as mail carries it: line breaks and stray characters skipped, padding optional.
fn base64_lenient(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let mut clean: Vec<u8> = data
        .iter()
        .copied()
        .take_while(|&b| b != b'=')
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&clean)
        .unwrap_or_default()
}

/// Quoted-printable (RFC 2045 6.7): soft line breaks removed, `=XX` decoded, anything
/// malformed kept as it is.
fn qp_decode(data: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &data[i + 1..];
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else if let (Some(h), Some(l)) = (
            rest.first().and_then(|&c| hex(c)),
            rest.get(1).and_then(|&c| hex(c)),
        ) {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

fn section(label: &str, peek: bool, part: Vec<u32>, text: SectionText) -> Item {
    Item::Section {
        label: label.to_owned(),
        peek,
        part,
        text,
        partial: None,
    }
}

/// Bare LF → CRLF (existing CRLF kept); `data` itself when it has no bare LF. Lines are
/// found with memchr and copied whole: a FETCH of BODY[] converts every byte it sends.
pub fn to_crlf(data: Vec<u8>) -> Vec<u8> {
    let bare = |i: usize| i == 0 || data[i - 1] != b'\r';
    let Some(first) = memchr::memchr_iter(b'\n', &data).find(|&i| bare(i)) else {
        return data;
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 30);
    out.extend_from_slice(&data[..first]);
    out.extend_from_slice(b"\r\n");
    let mut start = first + 1;
    let from = start;
    for i in memchr::memchr_iter(b'\n', &data[from..]).map(|i| i + from) {
        if bare(i) {
            out.extend_from_slice(&data[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&data[start..]);
    out
}

pub fn parse_message(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// The bytes of a section.
pub fn section_bytes(
    raw: &[u8],
    msg: Option<&Message<'_>>,
    part: &[u32],
    text: &SectionText,
) -> Vec<u8> {
    let header_end = |b: &[u8]| -> usize {
        b.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(b.len(), |p| p + 4)
    };
    if part.is_empty() {
        return match text {
            SectionText::Full => raw.to_vec(),
            SectionText::Header => raw[..header_end(raw)].to_vec(),
            SectionText::Text => raw[header_end(raw)..].to_vec(),
            SectionText::Fields { names, not } => fields(&raw[..header_end(raw)], names, *not),
            SectionText::Mime => Vec::new(),
        };
    }
    let Some(msg) = msg else { return Vec::new() };
    let Some((m, idx, empty)) = find_part_in(msg, part) else {
        // The header-only last part of an unterminated multipart (see `structure`).
        return match text {
            SectionText::Mime => dropped_part_header(msg, part).unwrap_or_default(),
            _ => Vec::new(),
        };
    };
    let Some(p) = m.parts.get(idx) else {
        return Vec::new();
    };
    if empty {
        return Vec::new();
    }
    let src: &[u8] = &m.raw_message;
    let get = |a: u32, b: u32| src.get(a as usize..b as usize).unwrap_or_default().to_vec();
    match text {
        SectionText::Full => get(p.offset_body, p.offset_end),
        SectionText::Mime => get(p.offset_header, p.offset_body),
        // Only a message/rfc822 part has a header and text of its own (RFC 3501 6.4.5);
        // of any other part they are empty, as Dovecot answers.
        SectionText::Header | SectionText::Text | SectionText::Fields { .. }
            if !matches!(p.body, PartType::Message(_)) =>
        {
            Vec::new()
        }
        SectionText::Header | SectionText::Text | SectionText::Fields { .. } => {
            // Of an encapsulated message/rfc822 part.
            let inner = get(p.offset_body, p.offset_end);
            section_bytes(&inner, None, &[], text)
        }
    }
}

/// A part by its IMAP number: (the message holding it, its index in that message, whether
/// the number names the empty part that a multipart without a boundary answers as; see
/// `structure`).
fn find_part_in<'a>(msg: &'a Message<'a>, path: &[u32]) -> Option<(&'a Message<'a>, usize, bool)> {
    let mut m = msg;
    let mut idx = 0usize;
    let mut empty = false;
    for (k, &n) in path.iter().enumerate() {
        if k > 0
            && let PartType::Message(inner) = &m.parts.get(idx)?.body
        {
            m = inner;
            idx = 0;
        }
        let part = m.parts.get(idx)?;
        match &part.body {
            PartType::Multipart(children) => idx = *children.get(n as usize - 1)? as usize,
            _ if n == 1 => empty |= is_multipart_type(part),
            _ => return None,
        }
    }
    Some((m, idx, empty))
}

/// The header of part `path` when it is the header-only last part mail-parser dropped.
fn dropped_part_header(msg: &Message<'_>, path: &[u32]) -> Option<Vec<u8>> {
    let (&n, parent) = path.split_last()?;
    let (mut m, mut idx) = if parent.is_empty() {
        (msg, 0)
    } else {
        let (m, idx, empty) = find_part_in(msg, parent)?;
        if empty {
            return None;
        }
        (m, idx)
    };
    if let PartType::Message(inner) = &m.parts.get(idx)?.body {
        (m, idx) = (inner, 0);
    }
    let p = m.parts.get(idx)?;
    let PartType::Multipart(children) = &p.body else {
        return None;
    };
    if n as usize != children.len() + 1 {
        return None;
    }
    dropped_last_part(m, p, children).map(<[u8]>::to_vec)
}

/// The header fields named (or, `not`, all but those), then the blank line.
fn fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" {
            break;
        }
        if !(line.starts_with(b" ") || line.starts_with(b"\t")) {
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map(|i| String::from_utf8_lossy(&line[..i]).trim().to_owned())
                .unwrap_or_default();
            let listed = names.iter().any(|n| n.eq_ignore_ascii_case(&name));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The unfolded raw value of the first header field `name`.
pub fn raw_header(header: &[u8], name: &str) -> Option<String> {
    let f = fields(header, &[name.to_owned()], false);
    let s = String::from_utf8_lossy(&f);
    let (_, v) = s.split_once(':')?;
    Some(v.replace("\r\n", "").trim().to_owned())
}

/// ENVELOPE of part `idx` of `m` (0: the message itself): the header text as it is
/// (RFC 3501: no RFC 2047 decoding), addresses parsed as Dovecot does (`MISSING_MAILBOX`,
/// `MISSING_DOMAIN`, `SYNTAX_ERROR` where the header lacks them).
pub fn envelope(out: &mut Vec<u8>, m: &Message<'_>, idx: usize) {
    let Some(p) = m.parts.get(idx) else {
        out.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        return;
    };
    let f = RawFields::new(m, p);
    let raw = |n| f.get(n);
    let addr = |n| raw(n).map(|v| parse_addresses(&v)).unwrap_or_default();
    out.push(b'(');
    astring(out, raw(HeaderName::Date).as_deref());
    out.push(b' ');
    // Dovecot trims the subject's trailing white space (not the other fields').
    astring(
        out,
        raw(HeaderName::Subject)
            .as_deref()
            .map(<[u8]>::trim_ascii_end),
    );
    let from = addr(HeaderName::From);
    out.push(b' ');
    write_addresses(out, &from);
    for name in [
        HeaderName::Sender,
        HeaderName::ReplyTo,
        HeaderName::To,
        HeaderName::Cc,
        HeaderName::Bcc,
    ] {
        out.push(b' ');
        // Sender and Reply-To default to From (RFC 3501).
        let defaults = matches!(name, HeaderName::Sender | HeaderName::ReplyTo);
        let list = addr(name);
        write_addresses(
            out,
            if defaults && list.is_empty() {
                &from
            } else {
                &list
            },
        );
    }
    out.push(b' ');
    astring(out, raw(HeaderName::InReplyTo).as_deref());
    out.push(b' ');
    astring(out, raw(HeaderName::MessageId).as_deref());
    out.push(b')');
}

/// One ENVELOPE address: (name, route, mailbox, host). A group is a start marker
/// (mailbox = the group's name, host NIL) and an end marker (all NIL).
type EnvAddr = [Option<Vec<u8>>; 4];

fn write_addresses(out: &mut Vec<u8>, list: &[EnvAddr]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        for (i, f) in a.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            astring(out, f.as_deref());
        }
        out.push(b')');
    }
    out.push(b')');
}

/// An address-list header value (RFC 5322 3.4, obsolete forms tolerated) as Dovecot's
/// envelope gives it: display names as the raw phrase (quotes removed, words joined by
/// one space), a comment naming a bare addr-spec, parsing stopped at what cannot be read.
fn parse_addresses(v: &[u8]) -> Vec<EnvAddr> {
    let mut out = Vec::new();
    let mut lx = Lex::new(v);
    if !lx.lwsp() {
        return out;
    }
    loop {
        let start = lx.i;
        let phrase = phrase(&mut lx);
        if lx.peek() == Some(b':') && !phrase.is_empty() {
            lx.i += 1;
            lx.lwsp();
            out.push([None, None, Some(phrase), None]);
            let mut ok = true;
            if lx.peek().is_some_and(|b| b != b';') {
                loop {
                    if !mailbox(&mut lx, &mut out) {
                        ok = false;
                        break;
                    }
                    if lx.peek() != Some(b',') {
                        break;
                    }
                    lx.i += 1;
                    lx.lwsp();
                }
            }
            out.push([None, None, None, None]);
            if !ok || lx.peek() != Some(b';') {
                break;
            }
            lx.i += 1;
            lx.lwsp();
        } else {
            lx.i = start;
            if !mailbox(&mut lx, &mut out) {
                break;
            }
        }
        if lx.peek() != Some(b',') {
            break;
        }
        lx.i += 1;
        if !lx.lwsp() {
            break;
        }
    }
    out
}

/// Words (atoms, dots, quoted strings) joined by single spaces; comments skipped.
fn phrase(lx: &mut Lex<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut words = 0;
    loop {
        let w = if lx.peek() == Some(b'"') {
            match lx.quoted() {
                Some(w) => Cow::Owned(w),
                None => break,
            }
        } else {
            let w = lx.atom();
            if w.is_empty() {
                break;
            }
            Cow::Borrowed(w)
        };
        if words > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&w);
        words += 1;
    }
    out
}

/// A dot-atom with CFWS around the dots (obs-local-part, obs-domain), or a quoted string.
fn dot_atom(lx: &mut Lex<'_>) -> Vec<u8> {
    if lx.peek() == Some(b'"') {
        return lx.quoted().unwrap_or_default();
    }
    let mut out = lx.run(WORD).to_vec();
    while lx.peek() == Some(b'.') {
        lx.i += 1;
        lx.lwsp();
        out.push(b'.');
        out.extend_from_slice(lx.run(WORD));
    }
    out
}

/// A domain: dot-atom or `[literal]`; `None` when there is none.
fn domain(lx: &mut Lex<'_>) -> Option<Vec<u8>> {
    let d = if lx.peek() == Some(b'[') {
        let start = lx.i;
        while lx.peek().is_some_and(|b| b != b']') {
            lx.i += 1;
        }
        lx.peek()?;
        lx.i += 1;
        let d = lx.s[start..lx.i].to_vec();
        lx.lwsp();
        d
    } else {
        dot_atom(lx)
    };
    (!d.is_empty()).then_some(d)
}

/// One mailbox (name-addr or addr-spec) onto `out`; false when the list cannot go on.
fn mailbox(lx: &mut Lex<'_>, out: &mut Vec<EnvAddr>) -> bool {
    let start = lx.i;
    let name = phrase(lx);
    let filled = |mut a: EnvAddr| {
        a[2] = a[2]
            .take()
            .filter(|m| !m.is_empty())
            .or(Some(b"MISSING_MAILBOX".to_vec()));
        a[3] = a[3].take().or(Some(b"MISSING_DOMAIN".to_vec()));
        a
    };
    if lx.peek() == Some(b'<') {
        lx.i += 1;
        lx.lwsp();
        let mut a: EnvAddr = [(!name.is_empty()).then_some(name), None, None, None];
        let mut ok = true;
        if lx.peek() == Some(b'@') {
            // Obsolete route: @a,@b:
            let mut route = Vec::new();
            while lx.peek() == Some(b'@') {
                lx.i += 1;
                lx.lwsp();
                if !route.is_empty() {
                    route.push(b',');
                }
                route.push(b'@');
                route.extend(domain(lx).unwrap_or_default());
                while lx.peek() == Some(b',') {
                    lx.i += 1;
                    lx.lwsp();
                }
            }
            if lx.peek() == Some(b':') {
                lx.i += 1;
                lx.lwsp();
                a[1] = Some(route);
            } else {
                ok = false;
            }
        }
        // `<>` (and `<@route:>`): an empty address, not a syntax error.
        if ok && lx.peek() != Some(b'>') {
            let local = dot_atom(lx);
            ok = !local.is_empty();
            a[2] = ok.then_some(local);
            if ok && lx.peek() == Some(b'@') {
                lx.i += 1;
                lx.lwsp();
                a[3] = domain(lx);
            }
            ok = ok && lx.peek() == Some(b'>');
        }
        if !ok {
            a[3] = Some(b"SYNTAX_ERROR".to_vec());
            out.push(filled(a));
            return false;
        }
        lx.i += 1;
        lx.lwsp();
        out.push(filled(a));
        return true;
    }
    lx.i = start;
    lx.comment = None;
    let local = dot_atom(lx);
    let mut a: EnvAddr = [None, None, Some(local), None];
    if lx.peek() == Some(b'@') {
        lx.i += 1;
        lx.lwsp();
        a[3] = domain(lx);
    }
    a[0] = lx.comment.take().filter(|c| !c.is_empty());
    out.push(filled(a));
    true
}

/// BODYSTRUCTURE (`ext`) or BODY of part `idx` of `m`. Parameters and the other header
/// values come from the raw header text (Dovecot's answers: RFC 2231 continuations joined
/// but not decoded, Content-ID with its brackets).
pub fn structure(out: &mut Vec<u8>, m: &Message<'_>, idx: usize, ext: bool, depth: usize) {
    let Some(p) = m.parts.get(idx) else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let ct = p.content_type();
    let f = RawFields::new(m, p);
    let get = |n| f.get(n);
    let params = get(HeaderName::ContentType)
        .map(|v| content_params(&v))
        .unwrap_or_default();
    let children: &[u32] = match &p.body {
        PartType::Multipart(c) => c,
        _ => &[],
    };
    if matches!(p.body, PartType::Multipart(_)) || is_multipart_type(p) {
        out.push(b'(');
        if children.is_empty() || depth > 20 {
            // No parts (or no boundary to find them by): one empty text part, as Dovecot.
            out.extend_from_slice(
                b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0",
            );
            if ext {
                out.extend_from_slice(b" NIL NIL NIL NIL");
            }
            out.push(b')');
        } else {
            for &c in children {
                structure(out, m, c as usize, ext, depth + 1);
            }
            if let Some(header) = dropped_last_part(m, p, children) {
                header_only_part(out, header, ext);
            }
        }
        out.push(b' ');
        let sub = ct.and_then(|c| c.subtype()).unwrap_or("mixed");
        astring(out, Some(sub.to_ascii_lowercase().as_bytes()));
        if ext {
            out.push(b' ');
            write_params(out, &params, false);
            write_dsp_lang_loc(out, &get);
        }
        out.push(b')');
        return;
    }
    let (ty, sub) = match ct {
        Some(c) => (
            c.ctype().to_ascii_lowercase(),
            c.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        // RFC 2046 5.1.5: in a multipart/digest a part without Content-Type is a message.
        None if matches!(p.body, PartType::Message(_)) => {
            ("message".to_owned(), "rfc822".to_owned())
        }
        None => ("text".to_owned(), "plain".to_owned()),
    };
    let body = m
        .raw_message
        .get(p.offset_body as usize..p.offset_end as usize)
        .unwrap_or_default();
    out.push(b'(');
    astring(out, Some(ty.as_bytes()));
    out.push(b' ');
    astring(out, Some(sub.as_bytes()));
    out.push(b' ');
    write_params(out, &params, ty == "text");
    out.push(b' ');
    astring(out, get(HeaderName::ContentId).as_deref());
    out.push(b' ');
    astring(out, get(HeaderName::ContentDescription).as_deref());
    out.push(b' ');
    let enc = transfer_encoding(get(HeaderName::ContentTransferEncoding).as_deref());
    astring(out, Some(&enc));
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    if let PartType::Message(inner) = &p.body {
        out.push(b' ');
        envelope(out, inner, 0);
        out.push(b' ');
        if depth < 20 {
            structure(out, inner, 0, ext, depth + 1);
        } else {
            out.extend_from_slice(b"NIL");
        }
        out.extend_from_slice(format!(" {lines}").as_bytes());
    } else if ty == "text" {
        out.extend_from_slice(format!(" {lines}").as_bytes());
    }
    if ext {
        out.push(b' ');
        astring(out, get(HeaderName::ContentMd5).as_deref());
        write_dsp_lang_loc(out, &get);
    }
    out.push(b')');
}

/// The header of a last part that mail-parser dropped: a delimiter after the last part it
/// found, then header lines up to the end of the multipart with no closing delimiter (nor
/// blank line). Dovecot lists such a part (size 0); so do we.
fn dropped_last_part<'a>(
    m: &'a Message<'_>,
    p: &MessagePart<'_>,
    children: &[u32],
) -> Option<&'a [u8]> {
    let last = m.parts.get(*children.last()? as usize)?;
    let tail = m
        .raw_message
        .get(last.offset_end as usize..p.offset_end as usize)?;
    let boundary = p.content_type()?.attribute("boundary")?.as_bytes();
    let rest = tail
        .strip_prefix(b"\r\n")
        .or_else(|| tail.strip_prefix(b"\n"))?
        .strip_prefix(b"--")?
        .strip_prefix(boundary)?;
    if rest.starts_with(b"--") {
        return None;
    }
    // The rest of the delimiter line (ignored, as by mail-parser and Dovecot), then the
    // header (maybe none; a delimiter without a line end starts no part, as in Dovecot).
    let nl = rest.iter().position(|&b| b == b'\n')?;
    Some(&rest[nl + 1..])
}

/// The structure of a part that is only a header (no body: size 0).
fn header_only_part(out: &mut Vec<u8>, header: &[u8], ext: bool) {
    let get = |n: HeaderName<'static>| -> Option<Cow<'static, [u8]>> {
        let f = fields(header, &[n.as_str().to_owned()], false);
        let colon = f.iter().position(|&b| b == b':')?;
        let v: Vec<u8> = f[colon + 1..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        Some(Cow::Owned(v.trim_ascii().to_vec()))
    };
    let ct = get(HeaderName::ContentType).unwrap_or_default();
    let mut lx = Lex::new(&ct);
    lx.lwsp();
    let mut ty = lx.token().to_ascii_lowercase();
    let mut sub = Vec::new();
    if lx.peek() == Some(b'/') {
        lx.i += 1;
        lx.lwsp();
        sub = lx.token().to_ascii_lowercase();
    }
    if ty.is_empty() || sub.is_empty() {
        (ty, sub) = (b"text".to_vec(), b"plain".to_vec());
    }
    if ty == b"multipart" {
        out.extend_from_slice(
            b"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0",
        );
        out.extend_from_slice(if ext { b" NIL NIL NIL NIL) " } else { b") " });
        astring(out, Some(&sub));
        if ext {
            out.push(b' ');
            write_params(out, &content_params(&ct), false);
            write_dsp_lang_loc(out, &get);
        }
        out.push(b')');
        return;
    }
    out.push(b'(');
    astring(out, Some(&ty));
    out.push(b' ');
    astring(out, Some(&sub));
    out.push(b' ');
    write_params(out, &content_params(&ct), ty == b"text");
    out.push(b' ');
    astring(out, get(HeaderName::ContentId).as_deref());
    out.push(b' ');
    astring(out, get(HeaderName::ContentDescription).as_deref());
    out.push(b' ');
    let enc = transfer_encoding(get(HeaderName::ContentTransferEncoding).as_deref());
    astring(out, Some(&enc));
    out.extend_from_slice(b" 0");
    if ty == b"message" && sub == b"rfc822" {
        out.extend_from_slice(b" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0");
        out.extend_from_slice(if ext { b" NIL NIL NIL NIL) 0" } else { b") 0" });
    } else if ty == b"text" {
        out.extend_from_slice(b" 0");
    }
    if ext {
        out.push(b' ');
        astring(out, get(HeaderName::ContentMd5).as_deref());
        write_dsp_lang_loc(out, &get);
    }
    out.push(b')');
}

/// A Content-Transfer-Encoding value as its token, lower case (comments dropped, as
/// Dovecot reads it); `7bit` when there is none.
fn transfer_encoding(v: Option<&[u8]>) -> Vec<u8> {
    let mut lx = Lex::new(v.unwrap_or_default());
    lx.lwsp();
    match lx.token() {
        b"" => b"7bit".to_vec(),
        t => t.to_ascii_lowercase(),
    }
}

/// A part labelled multipart/* that mail-parser left a leaf (no boundary parameter).
fn is_multipart_type(p: &MessagePart<'_>) -> bool {
    !matches!(p.body, PartType::Multipart(_))
        && p.content_type()
            .is_some_and(|c| c.ctype().eq_ignore_ascii_case("multipart"))
}

/// The raw header values of one part, found in one pass over its header list: each
/// field's first occurrence, unfolded, leading white space skipped, RFC 2047 encoded-words and RFC 2231
/// encodings left as they are (IMAP passes header text through).
struct RawFields<'a> {
    src: &'a [u8],
    /// By `HeaderName::id()` (the well-known names all have ids below 64).
    first: [(u32, u32); 64],
}

impl<'a> RawFields<'a> {
    fn new(m: &'a Message<'_>, p: &MessagePart<'_>) -> Self {
        let mut first = [(u32::MAX, 0); 64];
        for h in &p.headers {
            if let HeaderName::Other(_) = h.name {
                continue;
            }
            if let Some(slot) = first.get_mut(usize::from(h.name.id()))
                && slot.0 == u32::MAX
            {
                *slot = (h.offset_start, h.offset_end);
            }
        }
        RawFields {
            src: &m.raw_message,
            first,
        }
    }

    fn get(&self, name: HeaderName<'static>) -> Option<Cow<'a, [u8]>> {
        let &(a, b) = self.first.get(usize::from(name.id()))?;
        if a == u32::MAX {
            return None;
        }
        let v = self.src.get(a as usize..b as usize)?.trim_ascii_start();
        // Line ends out; trailing white space stays, as Dovecot has it.
        let v = v.strip_suffix(b"\n").unwrap_or(v);
        let v = v.strip_suffix(b"\r").unwrap_or(v);
        Some(if v.contains(&b'\n') || v.contains(&b'\r') {
            Cow::Owned(
                v.iter()
                    .copied()
                    .filter(|&b| b != b'\r' && b != b'\n')
                    .collect(),
            )
        } else {
            Cow::Borrowed(v)
        })
    }
}

/// `CLASS` bits: MIME token, atom with dots, dot-atom piece, unquoted value after `=`.
const TOKEN: u8 = 1;
const ATOM: u8 = 2;
const WORD: u8 = 4;
const RAW: u8 = 8;

/// Byte classes for `Lex::run`, a table rather than set searches: FETCH parses every
/// part's parameters.
const CLASS: [u8; 256] = {
    const fn has(set: &[u8], c: u8) -> bool {
        let mut i = 0;
        while i < set.len() {
            if set[i] == c {
                return true;
            }
            i += 1;
        }
        false
    }
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let visible = c > b' ' && c != 0x7f;
        if visible && !has(b"()<>@,;:\\\"/[]?=", c) {
            t[b] |= TOKEN;
        }
        if visible && !has(b"()<>@,;:\\\"[]", c) {
            t[b] |= ATOM;
        }
        if visible && !has(b"()<>@,;:\\\".[]", c) {
            t[b] |= WORD;
        }
        if !has(b" \t\r\n;", c) {
            t[b] |= RAW;
        }
        b += 1;
    }
    t
};

/// A cursor over an unfolded header value, with RFC 822 lexical rules (comments skipped
/// as white space, the last one remembered: an addr-spec's comment names the mailbox).
struct Lex<'a> {
    s: &'a [u8],
    i: usize,
    comment: Option<Vec<u8>>,
}

impl<'a> Lex<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lex {
            s,
            i: 0,
            comment: None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips white space and (nested) comments; whether anything is left.
    fn lwsp(&mut self) -> bool {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'(' => {
                    let mut depth = 0usize;
                    let mut text = Vec::new();
                    while let Some(c) = self.peek() {
                        self.i += 1;
                        match c {
                            b'\\' => {
                                if let Some(n) = self.peek() {
                                    text.push(n);
                                    self.i += 1;
                                }
                                continue;
                            }
                            b'(' => depth += 1,
                            b')' => depth -= 1,
                            _ => {}
                        }
                        if depth == 0 {
                            break;
                        }
                        if !(c == b'(' && depth == 1) {
                            text.push(c);
                        }
                    }
                    self.comment = Some(text);
                }
                _ => break,
            }
        }
        self.i < self.s.len()
    }

    /// A run of bytes of a class (`CLASS` bits), then white space.
    fn run(&mut self, class: u8) -> &'a [u8] {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| CLASS[usize::from(b)] & class != 0)
        {
            self.i += 1;
        }
        let t = &self.s[start..self.i];
        self.lwsp();
        t
    }

    /// A MIME token (RFC 2045: no space, controls or tspecials; 8-bit bytes tolerated).
    fn token(&mut self) -> &'a [u8] {
        self.run(TOKEN)
    }

    /// An atom, dots allowed (obs-phrase).
    fn atom(&mut self) -> &'a [u8] {
        self.run(ATOM)
    }

    /// A quoted string at the cursor, unquoted; `None` when it is not closed.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    out.push(self.peek()?);
                    self.i += 1;
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        self.lwsp();
        Some(out)
    }
}

/// The parameters of a Content-Type or Content-Disposition value, as Dovecot gives them:
/// plain parameters in order, then RFC 2231 ones merged (`name*0*`, `name*1`... joined
/// into `name*` with the value still percent-encoded for the client, `name*0`, `name*1`
/// into `name`); a parameter with an unclosed quote is dropped, `a=` is `a ""`.
fn content_params(value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    // (name, index, extended, value)
    let mut split: Vec<(Vec<u8>, u32, bool, Vec<u8>)> = Vec::new();
    let Some(semi) = value.iter().position(|&b| b == b';') else {
        return out;
    };
    let mut lx = Lex::new(&value[semi..]);
    while let Some(b) = lx.peek() {
        if b != b';' {
            lx.i += 1;
            continue;
        }
        lx.i += 1;
        if !lx.lwsp() {
            break;
        }
        let key = lx.token();
        if lx.peek() != Some(b'=') {
            // Dovecot steps one byte past what it could not read (so `a=b;;c=d` loses c).
            lx.i += 1;
            continue;
        }
        lx.i += 1;
        let val = if !lx.lwsp() {
            Vec::new()
        } else if lx.peek() == Some(b'"') {
            match lx.quoted() {
                Some(v) => v,
                None => continue,
            }
        } else if lx.peek() == Some(b'=') {
            lx.run(RAW).to_vec()
        } else {
            lx.token().to_vec()
        };
        match key.iter().position(|&b| b == b'*') {
            Some(star) => {
                let rest = &key[star + 1..];
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                let idx = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                match &rest[digits..] {
                    // `name*`: one extended piece.
                    b"" if rest.is_empty() => split.push((key[..star].to_vec(), 0, true, val)),
                    b"" => split.push((key[..star].to_vec(), idx, false, val)),
                    b"*" => split.push((key[..star].to_vec(), idx, true, val)),
                    _ => out.push((key.to_vec(), val)),
                }
            }
            None => out.push((key.to_vec(), val)),
        }
    }
    split.sort_by(|a, b| {
        a.0.to_ascii_lowercase()
            .cmp(&b.0.to_ascii_lowercase())
            .then(a.1.cmp(&b.1))
    });
    let mut i = 0;
    while i < split.len() {
        let group: Vec<_> = split[i..]
            .iter()
            .take_while(|x| x.0.eq_ignore_ascii_case(&split[i].0))
            .collect();
        i += group.len();
        let complete = group.iter().enumerate().all(|(n, x)| x.1 as usize == n);
        if !complete {
            // Missing pieces: not RFC 2231 after all, each kept under its own name.
            for x in group {
                let mut k = x.0.clone();
                k.extend_from_slice(format!("*{}{}", x.1, if x.2 { "*" } else { "" }).as_bytes());
                out.push((k, x.3.clone()));
            }
            continue;
        }
        let extended = group.iter().any(|x| x.2);
        let mut v = Vec::new();
        if extended && !group[0].2 {
            v.extend_from_slice(b"''");
        }
        for x in &group {
            if extended && !x.2 {
                // Only `%` needs escaping for the value to read back as it was.
                for &b in &x.3 {
                    if b == b'%' {
                        v.extend_from_slice(b"%25");
                    } else {
                        v.push(b);
                    }
                }
            } else {
                v.extend_from_slice(&x.3);
            }
        }
        let mut k = group[0].0.clone();
        if extended {
            k.push(b'*');
        }
        out.push((k, v));
    }
    out
}

/// `("name" "value" ...)`, NIL when empty; a text part without a charset gets
/// `"charset" "us-ascii"` appended (RFC 2045's default, as Dovecot).
fn write_params(out: &mut Vec<u8>, params: &[(Vec<u8>, Vec<u8>)], text: bool) {
    let need_charset = text && !params.iter().any(|p| p.0.eq_ignore_ascii_case(b"charset"));
    if params.is_empty() && !need_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        astring(out, Some(&k.to_ascii_lowercase()));
        out.push(b' ');
        astring(out, Some(v));
    }
    if need_charset {
        if !params.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

/// The extension fields after body-fld-md5 / the multipart parameters: body-fld-dsp,
/// body-fld-lang, body-fld-loc.
fn write_dsp_lang_loc<'a>(
    out: &mut Vec<u8>,
    get: &dyn Fn(HeaderName<'static>) -> Option<Cow<'a, [u8]>>,
) {
    out.push(b' ');
    match get(HeaderName::ContentDisposition) {
        Some(v) => {
            let mut lx = Lex::new(&v);
            lx.lwsp();
            let ty = lx.token();
            if ty.is_empty() {
                out.extend_from_slice(b"NIL");
            } else {
                out.push(b'(');
                astring(out, Some(&ty.to_ascii_lowercase()));
                out.push(b' ');
                write_params(out, &content_params(&v), false);
                out.push(b')');
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let langs: Vec<Vec<u8>> = get(HeaderName::ContentLanguage)
        .map(|v| {
            let mut lx = Lex::new(&v);
            let mut l = Vec::new();
            lx.lwsp();
            loop {
                let t = lx.token();
                if t.is_empty() {
                    break;
                }
                l.push(t.to_vec());
                if lx.peek() != Some(b',') {
                    break;
                }
                lx.i += 1;
                lx.lwsp();
            }
            l
        })
        .unwrap_or_default();
    if langs.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, l) in langs.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            astring(out, Some(l));
        }
        out.push(b')');
    }
    out.push(b' ');
    astring(out, get(HeaderName::ContentLocation).as_deref());
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 → (year, month 1-12, day).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// INTERNALDATE's form, in UTC: `17-Jul-1996 02:44:25 +0000`.
pub fn internal_date(secs: i64) -> String {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{d:02}-{}-{y:04} {:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// A SEARCH date (`1-Feb-1994`) → days since the epoch.
pub fn search_date(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let d: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let y: i64 = it.next()?.parse().ok()?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    if it.next().is_some() || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// An APPEND date-time (`17-Jul-1996 02:44:25 -0700`) → Unix seconds.
pub fn append_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let days = search_date(date)?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3
        || zone.len() != 5
        || t[0] > 23
        || t[1] > 59
        || t[2] > 60
        || t.iter().any(|&x| x < 0)
    {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let z: i64 = zone[1..].parse().ok()?;
    let offset = sign * (z / 100 * 3600 + z % 100 * 60);
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2] - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &[u8] = b"From: Ann <ann@example.com>\r\nTo: bob@example.org, Cy <cy@x.test>\r\nSubject: hi\r\nMessage-ID: <1@x>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n";

    #[test]
    fn sections_and_structure() -> Result<(), String> {
        let m = parse_message(MULTI).ok_or("parse")?;
        assert_eq!(
            section_bytes(MULTI, Some(&m), &[1], &SectionText::Full),
            b"hello".to_vec()
        );
        assert_eq!(
            section_bytes(MULTI, Some(&m), &[2], &SectionText::Mime),
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                .to_vec()
        );
        assert_eq!(
            section_bytes(
                MULTI,
                Some(&m),
                &[],
                &SectionText::Fields {
                    names: vec!["subject".into()],
                    not: false
                }
            ),
            b"Subject: hi\r\n\r\n".to_vec()
        );
        let mut out = Vec::new();
        envelope(&mut out, &m, 0);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "(NIL \"hi\" ((\"Ann\" NIL \"ann\" \"example.com\")) ((\"Ann\" NIL \"ann\" \"example.com\")) ((\"Ann\" NIL \"ann\" \"example.com\")) ((NIL NIL \"bob\" \"example.org\")(\"Cy\" NIL \"cy\" \"x.test\")) NIL NIL NIL \"<1@x>\")"
        );
        let mut out = Vec::new();
        structure(&mut out, &m, 0, false, 0);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 5 0)(\"application\" \"octet-stream\" NIL NIL NIL \"base64\" 4) \"mixed\")"
        );
        Ok(())
    }

    fn params(v: &str) -> Vec<(String, String)> {
        content_params(v.as_bytes())
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn parameters_as_dovecot() {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        // RFC 2231: continuations joined, the extended value left encoded, `%` escaped in
        // a plain piece of an extended value; plain parameters first.
        assert_eq!(
            params(
                "text/plain; charset*=us-ascii'en'us-ascii; name*0*=UTF-8''%C3%9C; name*1=\"a b%\"; format=flowed"
            ),
            vec![
                p("format", "flowed"),
                p("charset*", "us-ascii'en'us-ascii"),
                p("name*", "UTF-8''%C3%9Ca b%25"),
            ]
        );
        assert_eq!(
            params("multipart/mixed;\tboundary*1=\"b\"; boundary*0=\"a-\""),
            vec![p("boundary", "a-b")]
        );
        // A missing piece: not RFC 2231, each kept as it is.
        assert_eq!(params("x/y; t*1=c"), vec![p("t*1", "c")]);
        // Empty value, empty name, unclosed quote (dropped), comments, no parameters.
        assert_eq!(
            params("text/html; charset=; =novalue; (c) a = \"q\\\"x\" ; name=\"unclosed"),
            vec![p("charset", ""), p("", "novalue"), p("a", "q\"x")]
        );
        assert_eq!(params("text/plain"), vec![]);
        let mut out = Vec::new();
        write_params(&mut out, &[], true);
        assert_eq!(out, b"(\"charset\" \"us-ascii\")");
    }

    fn env(v: &str) -> String {
        let mut out = Vec::new();
        write_addresses(&mut out, &parse_addresses(v.as_bytes()));
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn envelope_addresses_as_dovecot() {
        // Display names stay as the header has them (RFC 2047 words not decoded).
        assert_eq!(
            env(
                "=?UTF-8?B?5bGx?= <taro@example.jp>, \"Ben  B.\" <ben@x>, John  Q.   Public <jqp@x>"
            ),
            "((\"=?UTF-8?B?5bGx?=\" NIL \"taro\" \"example.jp\")(\"Ben  B.\" NIL \"ben\" \"x\")(\"John Q. Public\" NIL \"jqp\" \"x\"))"
        );
        assert_eq!(
            env("undisclosed-recipients:;, Team: anna@x, <b@y>;"),
            "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)(NIL NIL \"Team\" NIL)(NIL NIL \"anna\" \"x\")(NIL NIL \"b\" \"y\")(NIL NIL NIL NIL))"
        );
        assert_eq!(
            env("foo, a@b (Comment Name), \"Quoted Local\"@example.com"),
            "((NIL NIL \"foo\" \"MISSING_DOMAIN\")(\"Comment Name\" NIL \"a\" \"b\")(NIL NIL \"Quoted Local\" \"example.com\"))"
        );
        assert_eq!(
            env("a@b, , c@d"),
            "((NIL NIL \"a\" \"b\")(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL \"c\" \"d\"))"
        );
        assert_eq!(
            env("Mary <@machine.tld:mary@example.net>, jdoe@test   . example"),
            "((\"Mary\" \"@machine.tld\" \"mary\" \"example.net\")(NIL NIL \"jdoe\" \"test.example\"))"
        );
        assert_eq!(
            env("bad <<x@y>, more@z"),
            "((\"bad\" NIL \"MISSING_MAILBOX\" \"SYNTAX_ERROR\"))"
        );
        assert_eq!(
            env("Ann <ann@x"),
            "((\"Ann\" NIL \"ann\" \"SYNTAX_ERROR\"))"
        );
        assert_eq!(
            env("<>, <@a:>, \"a b\"@x"),
            "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL \"@a\" \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")(NIL NIL \"a b\" \"x\"))"
        );
        assert_eq!(
            env("broken@@z, ok@z"),
            "((NIL NIL \"broken\" \"MISSING_DOMAIN\"))"
        );
        assert_eq!(env("(only a comment)"), "NIL");
        assert_eq!(env(""), "NIL");
    }

    #[test]
    fn header_value_parsers_never_panic() {
        // Every short string of the characters that steer the parsers.
        let alphabet = b"()<>@,;:\\\".[]= a*%'\xc3";
        let mut v = Vec::new();
        for len in 1..=4u32 {
            for mut k in 0..alphabet.len().pow(len) {
                v.clear();
                for _ in 0..len {
                    v.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let _ = parse_addresses(&v);
                v.insert(0, b';');
                let _ = content_params(&v);
            }
        }
    }

    fn bodystructure(raw: &[u8], ext: bool) -> Result<String, String> {
        let m = parse_message(raw).ok_or("parse")?;
        let mut out = Vec::new();
        structure(&mut out, &m, 0, ext, 0);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn malformed_and_default_structures() -> Result<(), String> {
        // No boundary: a multipart with one empty text part; its BODY[1] is empty.
        let nb = b"Content-Type: multipart/mixed\r\n\r\n--none\r\nContent-Type: text/plain\r\n\r\nbody\r\n--none--\r\n";
        assert_eq!(
            bodystructure(nb, true)?,
            "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" NIL NIL NIL NIL)"
        );
        let m = parse_message(nb).ok_or("parse")?;
        assert_eq!(section_bytes(nb, Some(&m), &[1], &SectionText::Full), b"");
        assert_eq!(section_bytes(nb, Some(&m), &[1], &SectionText::Mime), b"");
        assert_eq!(binary_bytes(nb, Some(&m), &[1]), Ok(Vec::new()));
        // Unterminated: the header-only last part is kept; nested text parts without a
        // charset get us-ascii; a digest part without Content-Type is a message.
        let un = b"Content-Type: multipart/mixed; boundary=u\r\n\r\n--u\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--u\r\nContent-Type: application/x-broken; =novalue\r\n";
        let m = parse_message(un).ok_or("parse")?;
        assert_eq!(
            section_bytes(un, Some(&m), &[2], &SectionText::Mime),
            b"Content-Type: application/x-broken; =novalue\r\n"
        );
        assert_eq!(section_bytes(un, Some(&m), &[2], &SectionText::Full), b"");
        assert_eq!(section_bytes(un, Some(&m), &[3], &SectionText::Mime), b"");
        assert_eq!(
            bodystructure(un, false)?,
            "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0)(\"application\" \"x-broken\" (\"\" \"novalue\") NIL NIL \"7bit\" 0) \"mixed\")"
        );
        // A delimiter line ending the message starts an empty part; without its line end
        // it starts none (as Dovecot).
        let ends = b"Content-Type: multipart/mixed; boundary=u\r\n\r\n--u\r\n\r\nfirst\r\n--u\r\n";
        assert_eq!(
            bodystructure(ends, false)?,
            "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"mixed\")"
        );
        assert_eq!(
            bodystructure(&ends[..ends.len() - 2], false)?,
            "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0) \"mixed\")"
        );
        let dg = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: s\r\n\r\nhi\r\n--d--\r\n";
        assert_eq!(
            bodystructure(dg, false)?,
            "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 16 (NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 2 0) 2) \"digest\")"
        );
        // Extension data from the raw header: Content-ID with brackets, MD5, language,
        // location; n.HEADER of a part that is not message/rfc822 is empty.
        let ex = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-ID: <c@x>\r\nContent-MD5: Q2g=\r\nContent-Language: en-GB (English), de\r\nContent-Location: https://x/r.pdf\r\nContent-Disposition: attachment; filename*=UTF-8''r%C3%A9.pdf\r\n\r\nAAAA\r\n--b--\r\n";
        assert_eq!(
            bodystructure(ex, true)?,
            "((\"application\" \"pdf\" (\"name\" \"r.pdf\") \"<c@x>\" NIL \"7bit\" 4 \"Q2g=\" (\"attachment\" (\"filename*\" \"UTF-8''r%C3%A9.pdf\")) (\"en-GB\" \"de\") \"https://x/r.pdf\") \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)"
        );
        let m = parse_message(ex).ok_or("parse")?;
        assert_eq!(section_bytes(ex, Some(&m), &[1], &SectionText::Header), b"");
        assert_eq!(section_bytes(ex, Some(&m), &[1], &SectionText::Text), b"");
        Ok(())
    }

    #[test]
    fn binary() -> Result<(), String> {
        let m = parse_message(MULTI).ok_or("parse")?;
        assert_eq!(binary_bytes(MULTI, Some(&m), &[2]), Ok(vec![0, 1, 2]));
        assert_eq!(binary_bytes(MULTI, Some(&m), &[1]), Ok(b"hello".to_vec()));
        assert_eq!(qp_decode(b"a=3Db=\r\nc=ZZ"), b"a=bc=ZZ".to_vec());
        let x = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nabc\r\n";
        let mx = parse_message(x).ok_or("parse")?;
        assert_eq!(binary_bytes(x, Some(&mx), &[1]), Err(()));
        assert_eq!(
            items(&Value::Atom("BINARY.PEEK[2]<0.2>".into())),
            Some(vec![Item::Binary {
                label: "BINARY[2]<0>".into(),
                peek: true,
                part: vec![2],
                partial: Some((0, 2))
            }])
        );
        assert_eq!(
            items(&Value::Atom("BINARY.SIZE[1.2]".into())),
            Some(vec![Item::BinarySize { part: vec![1, 2] }])
        );
        assert_eq!(items(&Value::Atom("BINARY[HEADER]".into())), None);
        Ok(())
    }

    #[test]
    fn crlf() {
        for (i, o) in [
            (&b""[..], &b""[..]),
            (b"a", b"a"),
            (b"\n", b"\r\n"),
            (b"a\nb\r\nc\n\n", b"a\r\nb\r\nc\r\n\r\n"),
            (b"\r\n\r\nx\n", b"\r\n\r\nx\r\n"),
            (b"a\rb\r\n", b"a\rb\r\n"),
            (b"\n\r\n\r", b"\r\n\r\n\r"),
        ] {
            assert_eq!(to_crlf(i.to_vec()), o, "{:?}", String::from_utf8_lossy(i));
        }
    }

    #[test]
    fn items_and_dates() {
        assert_eq!(
            item("body.peek[1.HEADER.FIELDS (From)]<0.10>"),
            Some(Item::Section {
                label: "BODY[1.HEADER.FIELDS (FROM)]<0>".into(),
                peek: true,
                part: vec![1],
                text: SectionText::Fields {
                    names: vec!["FROM".into()],
                    not: false
                },
                partial: Some((0, 10)),
            })
        );
        assert_eq!(item("BODY[0]"), None);
        assert_eq!(internal_date(0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(append_date("17-Jul-1996 02:44:25 -0700"), Some(837_596_665));
        assert_eq!(internal_date(837_596_665), "17-Jul-1996 09:44:25 +0000");
        assert_eq!(search_date("1-Feb-1994"), Some(days_from_civil(1994, 2, 1)));
    }
}

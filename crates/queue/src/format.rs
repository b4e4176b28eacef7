//! The queue file format, version 1.
//!
//! One file per message. All integers are big-endian. The file is written once, front to
//! back, by one writer; afterwards the only change ever made in place is a recipient's
//! one-byte done-mark.
//!
//! # File header (8 bytes, offset 0)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `OXQF` (`4F 58 51 46`) |
//! | 4 | 2 | format version, u16; this is version **1** |
//! | 6 | 2 | flags, u16 (see below); unknown bits are ignored |
//!
//! A reader refuses a file whose version is greater than the one it knows
//! ([`QueueError::UnsupportedVersion`]); version 0 is
//! corrupt. Compatible changes never bump the version: they add record types instead.
//!
//! Header flags: `0x0001` [`FLAG_TRACE`] (the sender asked for a delivery report of every
//! recipient, like `sendmail -v`), `0x0002` [`FLAG_VERIFY`] (address-verification probe: resolve,
//! never deliver). Other bits are reserved, written as 0.
//!
//! # Records (from offset 8 to the end of the file)
//!
//! Each record is `type: u8`, `length: u32`, then `length` bytes of payload. `length` is at most
//! [`MAX_RECORD_LEN`] (16 MiB); envelope records (every type but content) are at most
//! [`MAX_ENVELOPE_RECORD_LEN`] (1 MiB) so a reader can hold them in memory.
//!
//! Inside payloads, a *string* is `u32` length + that many bytes of UTF-8; an *optional
//! string* is one byte `0` (absent) or `1` followed by a string. A reader ignores payload bytes
//! after the fields it knows, so a later version may append fields to a record.
//!
//! | type | name | payload |
//! |---|---|---|
//! | `0x01` | ARRIVAL | `secs: u64`, `usecs: u32`: arrival time (also the time in the queue id) |
//! | `0x02` | SENDER | the envelope sender as raw UTF-8 bytes (no length prefix); empty = null sender `<>` |
//! | `0x03` | PARAMS | `size_present: u8`, `size: u64` (the MAIL FROM SIZE= value, 0 if absent), `body: u8` (0 unspecified, 1 `7BIT`, 2 `8BITMIME`, 3 `BINARYMIME`), `smtputf8: u8` (0/1), `ret: u8` (0 unspecified, 1 `FULL`, 2 `HDRS`), `envid`: optional string (as received, xtext-encoded) |
//! | `0x04` | RECIPIENT | `done: u8` (**the done-mark**, see below), `notify: u8` (bit mask: 1 NEVER, 2 SUCCESS, 4 FAILURE, 8 DELAY; 0 = not given), `address`: string, `orcpt`: optional string (as received, e.g. `rfc822;user@example.com`) |
//! | `0x05` | ATTRIBUTE | `name`: string, `value`: string: information about the origin of the message (`client_name`, `client_address`, `client_port`, `helo_name`, `protocol_name`, `sasl_method`, `sasl_username`, …), in the order written |
//! | `0x06` | CONTENT | raw message bytes (header and body, any 8-bit values, stored as received after SMTP dot-unstuffing). The message is the concatenation of every CONTENT payload in file order |
//! | `0x45` | END | `end_offset: u64` = the offset of this END record itself, then the 4 bytes `DONE`. Must be the last record: any byte after it makes the file corrupt |
//!
//! Record type `0x00` is never written; meeting it (for example in a zero-filled tail left by a
//! crash) makes the file corrupt. Unknown types `0x07`–`0x7F` (except END) are *skipped*, so a
//! newer writer may add optional records; unknown types `0x80`–`0xFF` are *critical*: a reader
//! that does not know them refuses the file as corrupt.
//!
//! The writer emits ARRIVAL first, then the envelope records, then CONTENT records (each at
//! most 64 KiB as written by [`QueueWriter`](crate::QueueWriter)), then END. Readers do not
//! depend on that order except that END is last. A complete file has exactly one SENDER and one
//! ARRIVAL record (a repeated one is corrupt); PARAMS is optional (defaults: nothing given).
//!
//! # Completeness
//!
//! A file is *complete* when its END record is present, well-formed, last, and points at itself.
//! The writer fsyncs the file only after writing END and gives the file its final name only
//! after that fsync, so a file under a queue-id name without END is a crashed or foreign write.
//! A reader that reaches end of file before END reports
//! [`QueueError::Incomplete`] and the file is never delivered.
//! As in Postfix, a finished file also gets mode 0700 (executable bit = "ready"), but readers
//! rely on END, not on the mode.
//!
//! # Done-marks
//!
//! The first payload byte of each RECIPIENT record (record offset + 5) is the done-mark: `0`
//! pending, `1` done (delivered, bounced, or otherwise final; no further attempt). The queue
//! manager sets it with a one-byte `pwrite` followed by `fdatasync`, never rewriting the file.
//! Any non-zero value reads as done.
//!
//! # Deferred messages
//!
//! The next delivery attempt time of a message in `deferred/` is the file's modification time
//! (set with `utimes`, both atime and mtime), as in Postfix; it is not stored in the file.

use std::io::{self, BufReader, Read, Seek};

use crate::error::{QueueError, Result};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 4] = *b"OXQF";
/// The format version this crate writes and the newest it reads.
pub const VERSION: u16 = 1;
/// Size of the file header.
pub const HEADER_LEN: u64 = 8;
/// Size of a record header (type + length).
pub const RECORD_HEADER_LEN: u64 = 5;
/// Largest record payload a reader accepts.
pub const MAX_RECORD_LEN: u32 = 16 << 20;
/// Largest non-content record payload a reader accepts.
pub const MAX_ENVELOPE_RECORD_LEN: u32 = 1 << 20;
/// Content chunk size the writer uses.
pub const CONTENT_CHUNK: usize = 64 << 10;

/// Header flag: report delivery of every recipient to the sender.
pub const FLAG_TRACE: u16 = 0x0001;
/// Header flag: address verification probe, never delivered.
pub const FLAG_VERIFY: u16 = 0x0002;

/// Record type codes.
pub mod rec {
    /// Arrival time.
    pub const ARRIVAL: u8 = 0x01;
    /// Envelope sender.
    pub const SENDER: u8 = 0x02;
    /// MAIL FROM parameters.
    pub const PARAMS: u8 = 0x03;
    /// One recipient with its done-mark.
    pub const RECIPIENT: u8 = 0x04;
    /// Name/value attribute.
    pub const ATTRIBUTE: u8 = 0x05;
    /// A chunk of message content.
    pub const CONTENT: u8 = 0x06;
    /// End marker.
    pub const END: u8 = 0x45;
    /// Types at or above this value must be understood by a reader.
    pub const CRITICAL_MIN: u8 = 0x80;
}

/// Trailer bytes of the END payload.
pub const END_TAG: [u8; 4] = *b"DONE";
/// Length of the END payload.
pub const END_PAYLOAD_LEN: u32 = 12;

/// Done-mark value for a pending recipient.
pub const DONE_PENDING: u8 = 0;
/// Done-mark value for a finished recipient.
pub const DONE_DONE: u8 = 1;

/// The BODY= parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME`.
    BinaryMime,
}

/// The RET= parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Hdrs,
}

/// MAIL FROM parameters kept with the message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` as announced by the client.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<BodyType>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, as received (xtext).
    pub envid: Option<String>,
}

/// DSN NOTIFY= bit mask. `Notify::default()` (0) means the client gave no NOTIFY.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Notify(pub u8);

impl Notify {
    /// NOTIFY=NEVER.
    pub const NEVER: Notify = Notify(1);
    /// SUCCESS.
    pub const SUCCESS: Notify = Notify(2);
    /// FAILURE.
    pub const FAILURE: Notify = Notify(4);
    /// DELAY.
    pub const DELAY: Notify = Notify(8);

    /// True when no NOTIFY was given.
    pub fn is_unspecified(self) -> bool {
        self.0 == 0
    }

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Notify) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

impl std::ops::BitOr for Notify {
    type Output = Notify;
    fn bitor(self, rhs: Notify) -> Notify {
        Notify(self.0 | rhs.0)
    }
}

impl std::fmt::Display for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unspecified() {
            return f.write_str("(unspecified)");
        }
        let names = [
            (Notify::NEVER, "NEVER"),
            (Notify::SUCCESS, "SUCCESS"),
            (Notify::FAILURE, "FAILURE"),
            (Notify::DELAY, "DELAY"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.contains(bit) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        let unknown = self.0 & !0x0f;
        if unknown != 0 {
            write!(f, "{}0x{unknown:02x}", if first { "" } else { "," })?;
        }
        Ok(())
    }
}

/// One envelope recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipient {
    /// The address (without angle brackets).
    pub address: String,
    /// `ORCPT=` as received.
    pub orcpt: Option<String>,
    /// `NOTIFY=`.
    pub notify: Notify,
    /// Done-mark: true when no further delivery attempt is to be made.
    pub done: bool,
}

impl Recipient {
    /// A pending recipient with no DSN parameters.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            ..Recipient::default()
        }
    }
}

/// A name/value attribute about the message's origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name, e.g. [`attr::CLIENT_ADDRESS`].
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Well-known attribute names (as in Postfix's queue files).
pub mod attr {
    /// Client host name.
    pub const CLIENT_NAME: &str = "client_name";
    /// Client IP address.
    pub const CLIENT_ADDRESS: &str = "client_address";
    /// Client port.
    pub const CLIENT_PORT: &str = "client_port";
    /// HELO/EHLO argument.
    pub const HELO_NAME: &str = "helo_name";
    /// SMTP, ESMTP, ESMTPSA, … as in the Received: header.
    pub const PROTOCOL_NAME: &str = "protocol_name";
    /// SASL mechanism.
    pub const SASL_METHOD: &str = "sasl_method";
    /// Authenticated SASL user.
    pub const SASL_USERNAME: &str = "sasl_username";
    /// Where the message entered (`smtpd`, `pickup`, …).
    pub const ORIGIN: &str = "origin";
}

/// The envelope of a message: everything except its content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope sender; empty for the null sender.
    pub sender: String,
    /// MAIL FROM parameters.
    pub params: MailParams,
    /// Recipients in file order; a recipient's index is its position here.
    pub recipients: Vec<Recipient>,
    /// Attributes in file order.
    pub attributes: Vec<Attribute>,
}

impl Envelope {
    /// The first attribute with this name.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// The 8-byte file header.
pub fn encode_header(flags: u16) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_be_bytes());
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h
}

/// A record header for a payload of `len` bytes.
pub fn encode_record_header(rtype: u8, len: u32) -> [u8; RECORD_HEADER_LEN as usize] {
    let l = len.to_be_bytes();
    [rtype, l[0], l[1], l[2], l[3]]
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// ARRIVAL payload.
pub fn encode_arrival(secs: u64, usecs: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&secs.to_be_bytes());
    p.extend_from_slice(&usecs.to_be_bytes());
    p
}

/// PARAMS payload.
pub fn encode_params(m: &MailParams) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.push(u8::from(m.size.is_some()));
    p.extend_from_slice(&m.size.unwrap_or(0).to_be_bytes());
    p.push(match m.body {
        None => 0,
        Some(BodyType::SevenBit) => 1,
        Some(BodyType::EightBitMime) => 2,
        Some(BodyType::BinaryMime) => 3,
    });
    p.push(u8::from(m.smtputf8));
    p.push(match m.ret {
        None => 0,
        Some(Ret::Full) => 1,
        Some(Ret::Hdrs) => 2,
    });
    put_opt_str(&mut p, m.envid.as_deref());
    p
}

/// RECIPIENT payload; the done-mark is its first byte.
pub fn encode_recipient(r: &Recipient) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + r.address.len());
    p.push(if r.done { DONE_DONE } else { DONE_PENDING });
    p.push(r.notify.0);
    put_str(&mut p, &r.address);
    put_opt_str(&mut p, r.orcpt.as_deref());
    p
}

/// ATTRIBUTE payload.
pub fn encode_attribute(name: &str, value: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + name.len() + value.len());
    put_str(&mut p, name);
    put_str(&mut p, value);
    p
}

/// END payload for an END record at `offset`.
pub fn encode_end(offset: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(END_PAYLOAD_LEN as usize);
    p.extend_from_slice(&offset.to_be_bytes());
    p.extend_from_slice(&END_TAG);
    p
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// A bounds-checked reader over one record payload.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    /// File offset of the payload, for error messages.
    base: u64,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], base: u64) -> Self {
        Fields { buf, pos: 0, base }
    }

    fn err(&self, what: &str) -> QueueError {
        QueueError::corrupt(self.base + self.pos as u64, what.to_string())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err(&format!("{what}: payload too short")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u32(what)? as usize;
        let at = self.pos;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| QueueError::corrupt(self.base + at as u64, format!("{what}: not UTF-8")))
    }

    fn opt_string(&mut self, what: &str) -> Result<Option<String>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.string(what)?)),
            _ => Err(self.err(&format!("{what}: bad presence byte"))),
        }
    }
}

/// Decodes an ARRIVAL payload into (secs, usecs).
pub fn decode_arrival(p: &[u8], base: u64) -> Result<(u64, u32)> {
    let mut f = Fields::new(p, base);
    let secs = f.u64("arrival")?;
    let usecs = f.u32("arrival")?;
    if usecs >= 1_000_000 {
        return Err(QueueError::corrupt(
            base,
            "arrival microseconds out of range",
        ));
    }
    Ok((secs, usecs))
}

/// Decodes a SENDER payload.
pub fn decode_sender(p: &[u8], base: u64) -> Result<String> {
    String::from_utf8(p.to_vec()).map_err(|_| QueueError::corrupt(base, "sender: not UTF-8"))
}

/// Decodes a PARAMS payload.
pub fn decode_params(p: &[u8], base: u64) -> Result<MailParams> {
    let mut f = Fields::new(p, base);
    let size_present = f.u8("params size flag")?;
    let size = f.u64("params size")?;
    let body = match f.u8("params body")? {
        0 => None,
        1 => Some(BodyType::SevenBit),
        2 => Some(BodyType::EightBitMime),
        3 => Some(BodyType::BinaryMime),
        _ => return Err(f.err("params: unknown BODY value")),
    };
    let smtputf8 = f.u8("params smtputf8")? != 0;
    let ret = match f.u8("params ret")? {
        0 => None,
        1 => Some(Ret::Full),
        2 => Some(Ret::Hdrs),
        _ => return Err(f.err("params: unknown RET value")),
    };
    let envid = f.opt_string("params envid")?;
    Ok(MailParams {
        size: (size_present != 0).then_some(size),
        body,
        smtputf8,
        ret,
        envid,
    })
}

/// Decodes a RECIPIENT payload.
pub fn decode_recipient(p: &[u8], base: u64) -> Result<Recipient> {
    let mut f = Fields::new(p, base);
    let done = f.u8("recipient done-mark")? != DONE_PENDING;
    let notify = Notify(f.u8("recipient notify")?);
    let address = f.string("recipient address")?;
    let orcpt = f.opt_string("recipient orcpt")?;
    Ok(Recipient {
        address,
        orcpt,
        notify,
        done,
    })
}

/// Decodes an ATTRIBUTE payload.
pub fn decode_attribute(p: &[u8], base: u64) -> Result<Attribute> {
    let mut f = Fields::new(p, base);
    let name = f.string("attribute name")?;
    let value = f.string("attribute value")?;
    Ok(Attribute { name, value })
}

/// Checks an END payload for an END record at `offset`.
pub fn check_end(p: &[u8], offset: u64) -> Result<()> {
    let mut f = Fields::new(p, offset + RECORD_HEADER_LEN);
    let at = f.u64("end offset")?;
    let tag = f.take(4, "end tag")?;
    if at != offset || tag != END_TAG {
        return Err(QueueError::corrupt(offset, "malformed end marker"));
    }
    Ok(())
}

/// The parsed file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Header flags.
    pub flags: u16,
}

/// One record as found by [`RecordScanner`]. Envelope payloads are loaded; content payloads
/// are not (only their position), so scanning a large message stays cheap.
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// File offset of the record header.
    pub offset: u64,
    /// Record type.
    pub rtype: u8,
    /// Payload length.
    pub len: u32,
    /// The payload, for every type but CONTENT.
    pub payload: Option<Vec<u8>>,
}

impl RawRecord {
    /// File offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN
    }
}

/// A low-level, forward-only scanner over the records of a queue file. It checks framing only
/// (lengths, END placement); payload meaning is left to the caller.
pub struct RecordScanner<R> {
    inner: BufReader<R>,
    pos: u64,
    file_len: u64,
    header: Header,
    done: bool,
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read + Seek> RecordScanner<R> {
    /// Reads and checks the file header. `file_len` is the file's size (from `fstat`), which
    /// bounds every record.
    pub fn new(inner: R, file_len: u64) -> Result<Self> {
        let mut inner = BufReader::with_capacity(16 << 10, inner);
        let mut h = [0u8; HEADER_LEN as usize];
        let n = read_full(&mut inner, &mut h)?;
        let got = &h[..n];
        let magic_part = &got[..n.min(4)];
        if magic_part != &MAGIC[..magic_part.len()] {
            return Err(QueueError::corrupt(0, "bad magic"));
        }
        if n < h.len() {
            return Err(QueueError::Incomplete);
        }
        let version = u16::from_be_bytes([h[4], h[5]]);
        let flags = u16::from_be_bytes([h[6], h[7]]);
        if version == 0 {
            return Err(QueueError::corrupt(4, "format version 0"));
        }
        if version > VERSION {
            return Err(QueueError::UnsupportedVersion(version));
        }
        Ok(RecordScanner {
            inner,
            pos: HEADER_LEN,
            file_len,
            header: Header { version, flags },
            done: false,
        })
    }

    /// The file header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// True once the END record has been returned.
    pub fn at_end(&self) -> bool {
        self.done
    }

    /// The next record, `Ok(None)` after END. Reaching end of file before END is
    /// [`QueueError::Incomplete`]; bytes after END are corrupt.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>> {
        if self.done {
            return Ok(None);
        }
        let offset = self.pos;
        let mut rh = [0u8; RECORD_HEADER_LEN as usize];
        let n = read_full(&mut self.inner, &mut rh)?;
        if n < rh.len() {
            return Err(QueueError::Incomplete);
        }
        let rtype = rh[0];
        let len = u32::from_be_bytes([rh[1], rh[2], rh[3], rh[4]]);
        if rtype == 0 {
            return Err(QueueError::corrupt(offset, "record type 0"));
        }
        if len > MAX_RECORD_LEN {
            return Err(QueueError::corrupt(offset, format!("record length {len}")));
        }
        let end = offset + RECORD_HEADER_LEN + u64::from(len);
        let payload = if rtype == rec::CONTENT {
            if end > self.file_len {
                return Err(QueueError::Incomplete);
            }
            self.inner.seek_relative(i64::from(len))?;
            None
        } else {
            if len > MAX_ENVELOPE_RECORD_LEN {
                return Err(QueueError::corrupt(
                    offset,
                    format!("envelope record length {len}"),
                ));
            }
            if end > self.file_len {
                return Err(QueueError::Incomplete);
            }
            let mut p = vec![0u8; len as usize];
            if read_full(&mut self.inner, &mut p)? < p.len() {
                return Err(QueueError::Incomplete);
            }
            Some(p)
        };
        self.pos = end;
        if rtype == rec::END {
            check_end(payload.as_deref().unwrap_or(&[]), offset)?;
            if end != self.file_len {
                return Err(QueueError::corrupt(end, "data after end marker"));
            }
            // Also catch a file that grew after we took its size.
            let mut extra = [0u8; 1];
            if read_full(&mut self.inner, &mut extra)? != 0 {
                return Err(QueueError::corrupt(end, "data after end marker"));
            }
            self.done = true;
        } else if rtype >= rec::CRITICAL_MIN && !is_known(rtype) {
            return Err(QueueError::corrupt(
                offset,
                format!("unknown critical record type 0x{rtype:02x}"),
            ));
        }
        Ok(Some(RawRecord {
            offset,
            rtype,
            len,
            payload,
        }))
    }
}

/// True for the record types this version knows.
pub fn is_known(rtype: u8) -> bool {
    matches!(
        rtype,
        rec::ARRIVAL
            | rec::SENDER
            | rec::PARAMS
            | rec::RECIPIENT
            | rec::ATTRIBUTE
            | rec::CONTENT
            | rec::END
    )
}

/// A human-readable name for a record type.
pub fn record_name(rtype: u8) -> &'static str {
    match rtype {
        rec::ARRIVAL => "arrival",
        rec::SENDER => "sender",
        rec::PARAMS => "params",
        rec::RECIPIENT => "recipient",
        rec::ATTRIBUTE => "attribute",
        rec::CONTENT => "content",
        rec::END => "end",
        t if t >= rec::CRITICAL_MIN => "unknown-critical",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let p = MailParams {
            size: Some(12345),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
            ret: Some(Ret::Hdrs),
            envid: Some("abc+2Bdef".into()),
        };
        assert_eq!(decode_params(&encode_params(&p), 0).expect("params"), p);
        assert_eq!(
            decode_params(&encode_params(&MailParams::default()), 0).expect("params"),
            MailParams::default()
        );
        let r = Recipient {
            address: "üser@exämple.org".into(),
            orcpt: Some("utf-8;üser@exämple.org".into()),
            notify: Notify::SUCCESS | Notify::DELAY,
            done: true,
        };
        assert_eq!(decode_recipient(&encode_recipient(&r), 0).expect("rcpt"), r);
        let a = decode_attribute(&encode_attribute("helo_name", "mx.example"), 0).expect("a");
        assert_eq!(a.name, "helo_name");
        assert_eq!(a.value, "mx.example");
        assert_eq!(
            decode_arrival(&encode_arrival(17, 999_999), 0).expect("t"),
            (17, 999_999)
        );
    }

    #[test]
    fn truncated_payloads_are_corrupt_not_panics() {
        let r = encode_recipient(&Recipient {
            address: "a@b".into(),
            orcpt: Some("rfc822;a@b".into()),
            ..Recipient::default()
        });
        for n in 0..r.len() {
            assert!(decode_recipient(&r[..n], 0).is_err());
        }
        let p = encode_params(&MailParams {
            envid: Some("x".into()),
            ..MailParams::default()
        });
        for n in 0..p.len() {
            assert!(decode_params(&p[..n], 0).is_err());
        }
    }

    #[test]
    fn trailing_fields_are_ignored() {
        let mut r = encode_recipient(&Recipient::new("a@b"));
        r.extend_from_slice(b"future fields");
        assert_eq!(
            decode_recipient(&r, 0).expect("rcpt").address,
            "a@b".to_string()
        );
    }

    #[test]
    fn notify_display() {
        assert_eq!(
            (Notify::SUCCESS | Notify::FAILURE).to_string(),
            "SUCCESS,FAILURE"
        );
        assert_eq!(Notify::NEVER.to_string(), "NEVER");
        assert_eq!(Notify::default().to_string(), "(unspecified)");
    }
}

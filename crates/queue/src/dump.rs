//! `postcat`-style printing of every record of a queue file, including incomplete and
//! partly corrupt files (everything readable is printed before the error is returned).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{QueueError, Result};
use crate::format::{self, RecordScanner, rec};
use crate::reader::QueueFile;

/// What [`dump`] prints (postcat's `-e`, `-b`/`-h`, `-o` options).
#[derive(Clone, Copy, Debug)]
pub struct DumpOptions {
    /// Print envelope records.
    pub envelope: bool,
    /// Print the message content.
    pub content: bool,
    /// Prefix each record with its byte offset.
    pub offsets: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            envelope: true,
            content: true,
            offsets: false,
        }
    }
}

/// Formats a time as `YYYY-MM-DD HH:MM:SS.uuuuuu UTC`.
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format_epoch(d.as_secs(), d.subsec_micros())
}

fn format_epoch(secs: u64, usecs: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{usecs:06} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn line(
    out: &mut dyn Write,
    opts: &DumpOptions,
    offset: u64,
    text: fmt::Arguments,
) -> io::Result<()> {
    if opts.offsets {
        write!(out, "{offset:>8} ")?;
    }
    out.write_fmt(text)?;
    out.write_all(b"\n")
}

/// Prints every record of the file at `path`. On an incomplete or corrupt file, prints what
/// could be read, then a `*** ... ***` line naming the problem, and returns the error.
pub fn dump(path: &Path, out: &mut dyn Write, opts: &DumpOptions) -> Result<()> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let r = dump_inner(&file, len, path, out, opts);
    match &r {
        Err(QueueError::Incomplete) => {
            writeln!(out, "*** INCOMPLETE FILE: no end marker ***")?;
        }
        Err(e) => writeln!(out, "*** ERROR: {e} ***")?,
        Ok(()) => {}
    }
    r
}

fn dump_inner(
    file: &File,
    len: u64,
    path: &Path,
    out: &mut dyn Write,
    opts: &DumpOptions,
) -> Result<()> {
    let mut scanner = RecordScanner::new(file, len)?;
    let h = scanner.header();
    if opts.envelope {
        writeln!(out, "*** ENVELOPE RECORDS {} ***", path.display())?;
        line(
            out,
            opts,
            0,
            format_args!("format_version: {} flags: 0x{:04x}", h.version, h.flags),
        )?;
    }
    let mut in_content = false;
    let mut nrcpt = 0usize;
    while let Some(r) = scanner.next_record()? {
        let base = r.payload_offset();
        let p = r.payload.as_deref().unwrap_or(&[]);
        if r.rtype == rec::CONTENT {
            if opts.content {
                if !in_content {
                    writeln!(out, "*** MESSAGE CONTENTS {} ***", path.display())?;
                    in_content = true;
                }
                let mut buf = [0u8; 8192];
                let mut done = 0u64;
                let len = u64::from(r.len);
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..n], base + done)?;
                    out.write_all(&buf[..n])?;
                    done += n as u64;
                }
            }
            continue;
        }
        if in_content {
            // Content records are contiguous in files we write; mark a return to envelope.
            writeln!(out)?;
            in_content = false;
        }
        if !opts.envelope && r.rtype != rec::END {
            continue;
        }
        match r.rtype {
            rec::ARRIVAL => {
                let (s, us) = format::decode_arrival(p, base)?;
                line(
                    out,
                    opts,
                    r.offset,
                    format_args!(
                        "message_arrival_time: {} ({s}.{us:06})",
                        format_epoch(s, us)
                    ),
                )?;
            }
            rec::SENDER => {
                let s = format::decode_sender(p, base)?;
                line(out, opts, r.offset, format_args!("sender: {s}"))?;
            }
            rec::PARAMS => {
                let m = format::decode_params(p, base)?;
                let mut s = String::new();
                if let Some(size) = m.size {
                    s.push_str(&format!(" SIZE={size}"));
                }
                if let Some(b) = m.body {
                    s.push_str(match b {
                        format::BodyType::SevenBit => " BODY=7BIT",
                        format::BodyType::EightBitMime => " BODY=8BITMIME",
                        format::BodyType::BinaryMime => " BODY=BINARYMIME",
                    });
                }
                if m.smtputf8 {
                    s.push_str(" SMTPUTF8");
                }
                if let Some(ret) = m.ret {
                    s.push_str(match ret {
                        format::Ret::Full => " RET=FULL",
                        format::Ret::Hdrs => " RET=HDRS",
                    });
                }
                if let Some(e) = &m.envid {
                    s.push_str(&format!(" ENVID={e}"));
                }
                line(out, opts, r.offset, format_args!("mail_params:{s}"))?;
            }
            rec::RECIPIENT => {
                let rc = format::decode_recipient(p, base)?;
                if let Some(o) = &rc.orcpt {
                    line(out, opts, r.offset, format_args!("original_recipient: {o}"))?;
                }
                line(
                    out,
                    opts,
                    r.offset,
                    format_args!(
                        "{}: {} (#{nrcpt} notify={})",
                        if rc.done {
                            "done_recipient"
                        } else {
                            "recipient"
                        },
                        rc.address,
                        rc.notify
                    ),
                )?;
                nrcpt += 1;
            }
            rec::ATTRIBUTE => {
                let a = format::decode_attribute(p, base)?;
                line(
                    out,
                    opts,
                    r.offset,
                    format_args!("named_attribute: {}={}", a.name, a.value),
                )?;
            }
            rec::END => {
                writeln!(out, "*** MESSAGE FILE END {} ***", path.display())?;
            }
            t => {
                line(
                    out,
                    opts,
                    r.offset,
                    format_args!("unknown_record: type=0x{t:02x} length={}", r.len),
                )?;
            }
        }
    }
    Ok(())
}

/// Prints the envelope in the same style as [`dump`] (no content).
impl fmt::Display for QueueFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "*** ENVELOPE RECORDS {} ***", self.path().display())?;
        let h = self.header();
        writeln!(f, "format_version: {} flags: 0x{:04x}", h.version, h.flags)?;
        writeln!(f, "message_arrival_time: {}", format_time(self.arrival()))?;
        writeln!(f, "message_size: {}", self.content_len())?;
        writeln!(f, "sender: {}", self.sender())?;
        for a in &self.envelope().attributes {
            writeln!(f, "named_attribute: {}={}", a.name, a.value)?;
        }
        for (i, r) in self.recipients().iter().enumerate() {
            if let Some(o) = &r.orcpt {
                writeln!(f, "original_recipient: {o}")?;
            }
            writeln!(
                f,
                "{}: {} (#{i} notify={})",
                if r.done {
                    "done_recipient"
                } else {
                    "recipient"
                },
                r.address,
                r.notify
            )?;
        }
        if !self.is_complete() {
            writeln!(f, "*** INCOMPLETE FILE: no end marker ***")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_formatting() {
        assert_eq!(format_epoch(0, 0), "1970-01-01 00:00:00.000000 UTC");
        assert_eq!(
            format_epoch(1_700_000_000, 42),
            "2023-11-14 22:13:20.000042 UTC"
        );
        assert_eq!(
            format_epoch(951_782_400, 0),
            "2000-02-29 00:00:00.000000 UTC"
        );
    }
}

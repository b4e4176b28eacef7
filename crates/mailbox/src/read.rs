//! Reading mailboxes, kept small for pop3d/imapd: list a Maildir's messages with their flags and
//! move them from `new/` to `cur/`; split an mbox into messages and undo `>From ` quoting.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::maildir::Maildir;

/// Which Maildir directory a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subdir {
    /// `new/`: delivered, not yet seen by any client.
    New,
    /// `cur/`: seen by a client; flags live in the name.
    Cur,
}

impl Subdir {
    /// The directory name.
    pub fn name(self) -> &'static str {
        match self {
            Subdir::New => "new",
            Subdir::Cur => "cur",
        }
    }
}

/// One message file of a Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildirEntry {
    /// Full path of the file.
    pub path: PathBuf,
    /// `new/` or `cur/`.
    pub subdir: Subdir,
    /// The unique name: the file name without `:2,FLAGS`. It stays the same when the message
    /// moves to `cur/` or its flags change, so it identifies the message.
    pub unique: String,
    /// Flags from `:2,FLAGS` (`D`raft, `F`lagged, `P`assed, `R`eplied, `S`een, `T`rashed, and
    /// Dovecot's lower-case keywords), sorted; empty in `new/`.
    pub flags: String,
    /// Size from a `,S=<size>` field in the name, when present.
    pub size: Option<u64>,
}

impl MaildirEntry {
    /// True when the flag letter is set.
    pub fn has_flag(&self, flag: char) -> bool {
        self.flags.contains(flag)
    }
}

/// Splits a Maildir file name into (unique name, `,S=` size, sorted flags).
pub fn parse_maildir_name(name: &str) -> (String, Option<u64>, String) {
    let (unique, info) = match name.rfind(':') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let flags = info
        .and_then(|i| i.strip_prefix("2,"))
        .map(sorted_flags)
        .unwrap_or_default();
    let size = unique
        .split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("S="))
        .and_then(|s| s.parse().ok());
    (unique.to_string(), size, flags)
}

fn sorted_flags(flags: &str) -> String {
    let mut v: Vec<char> = flags.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter().collect()
}

/// Orders Maildir unique names `<secs>.M<usec>P<pid>Q<count>...` by delivery: runs of digits
/// compare as numbers, since neither Dovecot nor oxipost zero-pads them (a plain string sort
/// puts `M301367` before `M61129`, and `Q10` before `Q9` within one batch).
pub fn delivery_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            // Numbers without leading zeros: the longer is larger, else compare digit by digit.
            let (na, nb) = (trim_zeros(&a[si..i]), trim_zeros(&b[sj..j]));
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j)).then_with(|| a.cmp(b))
}

/// Sorts `items` by [`delivery_order`] of `name(item)`, comparing first the leading number
/// (the delivery second) parsed once per item: the same order, without re-reading every
/// name's digits in each of the n log n comparisons (a first look at a 10,000-message
/// Maildir sorts them all).
pub fn sort_by_delivery<T>(items: &mut Vec<T>, name: impl Fn(&T) -> &str) {
    // At most 19 digits fit a u64; a longer run (or none) leaves the full comparison.
    fn lead(s: &str) -> Option<u64> {
        let d = s.bytes().take_while(u8::is_ascii_digit).count();
        if d == 0 || d > 19 {
            return None;
        }
        s[..d].parse().ok()
    }
    let mut keyed: Vec<(Option<u64>, T)> = items.drain(..).map(|t| (lead(name(&t)), t)).collect();
    // Equal to `delivery_order` for every pair: two leading numbers that differ are its
    // first comparison (numbers compare by value, leading zeros aside).
    keyed.sort_unstable_by(|(ka, a), (kb, b)| match (ka, kb) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => delivery_order(name(a), name(b)),
    });
    items.extend(keyed.into_iter().map(|(_, t)| t));
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let n = digits.iter().take_while(|&&d| d == b'0').count();
    &digits[n..]
}

impl Maildir {
    /// Lists the messages in `new/` and `cur/` (dot files skipped), sorted by delivery time (seconds, then
    /// microseconds) and then unique name. A missing `new/` or `cur/`
    /// is treated as empty.
    pub fn list(&self) -> Result<Vec<MaildirEntry>> {
        let mut out = Vec::new();
        for subdir in [Subdir::New, Subdir::Cur] {
            let dir = self.subdir(subdir.name());
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read directory", &dir, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
                let file_name = entry.file_name();
                let Some(name) = file_name.to_str() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let (unique, size, flags) = parse_maildir_name(name);
                out.push(MaildirEntry {
                    path: entry.path(),
                    subdir,
                    unique,
                    flags: if subdir == Subdir::New {
                        String::new()
                    } else {
                        flags
                    },
                    size,
                });
            }
        }
        sort_by_delivery(&mut out, |e| &e.unique);
        Ok(out)
    }

    /// Moves a message from `new/` to `cur/` as `<unique>:2,` (a client has seen the mailbox;
    /// the message is not yet `S`een). An entry already in `cur/` is returned unchanged.
    pub fn move_to_cur(&self, entry: &MaildirEntry) -> Result<MaildirEntry> {
        if entry.subdir == Subdir::Cur {
            return Ok(entry.clone());
        }
        self.rename_entry(entry, "")
    }

    /// Sets a message's flags (moving it to `cur/` if needed), e.g. `"RS"`.
    pub fn set_flags(&self, entry: &MaildirEntry, flags: &str) -> Result<MaildirEntry> {
        self.rename_entry(entry, flags)
    }

    fn rename_entry(&self, entry: &MaildirEntry, flags: &str) -> Result<MaildirEntry> {
        if entry.unique.contains('/') || entry.unique.is_empty() {
            return Err(Error::Invalid(format!(
                "invalid Maildir name {:?}",
                entry.unique
            )));
        }
        let flags = sorted_flags(flags);
        let target = self
            .subdir("cur")
            .join(format!("{}:2,{}", entry.unique, flags));
        std::fs::rename(&entry.path, &target).map_err(|e| Error::io("rename", &target, e))?;
        Ok(MaildirEntry {
            path: target,
            subdir: Subdir::Cur,
            unique: entry.unique.clone(),
            flags,
            size: entry.size,
        })
    }
}

/// One message of an mbox file, as byte ranges into the data given to [`parse_mbox`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    /// The `From ` separator line, without its LF.
    pub from_line: Range<usize>,
    /// The message (headers and body, still `>From `-quoted), without the empty line that
    /// separates it from the next message.
    pub content: Range<usize>,
}

/// Splits mbox data into messages. A message starts at a line beginning with `From ` that is
/// the first line of the data or follows an empty line. Anything before the first such line
/// is ignored.
pub fn parse_mbox(data: &[u8]) -> Vec<MboxMessage> {
    let mut starts: Vec<usize> = Vec::new();
    let mut pos = 0;
    let mut prev_empty = true;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| pos + i);
        let line = &data[pos..end];
        if prev_empty && line.starts_with(b"From ") {
            starts.push(pos);
        }
        prev_empty = line.is_empty() || line == b"\r";
        pos = end + 1;
    }
    let mut out = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let next = starts.get(i + 1).copied().unwrap_or(data.len());
        let from_end = data[start..next]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(next, |p| start + p);
        let content_start = (from_end + 1).min(next);
        let mut content_end = next;
        // Drop the separating empty line (the delivery agent's, or the mbox's last line).
        if content_end >= content_start + 2 && &data[content_end - 2..content_end] == b"\n\n" {
            content_end -= 1;
        } else if content_end == content_start + 1 && data[content_start] == b'\n' {
            content_end = content_start;
        }
        out.push(MboxMessage {
            from_line: start..from_end.min(next),
            content: content_start..content_end,
        });
    }
    out
}

/// Undoes `From ` quoting: removes one `>` from each line that begins with `>From `. (mboxo
/// quoting, which Postfix writes, cannot tell a quoted `From ` from an original `>From `; both
/// read back as `From `.)
pub fn unquote_from(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b">") {
            Some(rest) if rest.starts_with(b"From ") => out.extend_from_slice(rest),
            _ => out.extend_from_slice(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_in_delivery_order() {
        let mut names = vec![
            "1795862298.M61294P17910Q2.vm",
            "1795862297.M999999P1.vm",
            "odd-name",
            "1795862298.M61129P17910Q10.vm",
            "1795862298.M301367P17937Q0.vm",
            "1795862298.M61129P17910Q1.vm",
        ];
        names.sort_by(|a, b| delivery_order(a, b));
        assert_eq!(
            names,
            [
                "1795862297.M999999P1.vm",
                "1795862298.M61129P17910Q1.vm",
                "1795862298.M61129P17910Q10.vm",
                "1795862298.M61294P17910Q2.vm",
                "1795862298.M301367P17937Q0.vm",
                "odd-name",
            ]
        );
    }

    #[test]
    fn sort_by_delivery_is_delivery_order() {
        let mut names: Vec<String> = [
            "1795862298.M61294P17910Q2.vm",
            "01795862298.M1P1.vm",
            "1795862297.M999999P1.vm",
            "odd-name",
            "#hash",
            "99999999999999999999999.M1.vm",
            "1795862298.M61129P17910Q10.vm",
            "1795862298.M301367P17937Q0.vm",
            "1795862298.M61129P17910Q1.vm",
            "3.M1.vm",
            "20.M1.vm",
        ]
        .map(String::from)
        .to_vec();
        let mut expected = names.clone();
        expected.sort_by(|a, b| delivery_order(a, b));
        sort_by_delivery(&mut names, |s| s);
        assert_eq!(names, expected);
        assert_eq!(names[0], "#hash");
        assert_eq!(names[1], "3.M1.vm");
        assert_eq!(names[2], "20.M1.vm");
    }

    #[test]
    fn names_parse() {
        let (u, s, f) = parse_maildir_name("1.M2P3Q4V5I6.host,S=120:2,SR");
        assert_eq!(u, "1.M2P3Q4V5I6.host,S=120");
        assert_eq!(s, Some(120));
        assert_eq!(f, "RS");
        let (u, s, f) = parse_maildir_name("1.P3.host");
        assert_eq!((u.as_str(), s, f.as_str()), ("1.P3.host", None, ""));
    }

    #[test]
    fn mbox_splits_on_from_after_blank() {
        let data = b"From a  Thu Jan  1 00:00:00 1970\nS: 1\n\nbody\nFrom inside\n\nFrom b  x\nS: 2\n\n>From q\n\n";
        let m = parse_mbox(data);
        assert_eq!(m.len(), 2);
        assert_eq!(&data[m[0].content.clone()], b"S: 1\n\nbody\nFrom inside\n");
        assert_eq!(&data[m[1].from_line.clone()], b"From b  x");
        assert_eq!(&data[m[1].content.clone()], b"S: 2\n\n>From q\n");
        assert_eq!(
            unquote_from(&data[m[1].content.clone()]),
            b"S: 2\n\nFrom q\n"
        );
    }

    #[test]
    fn unquote_touches_only_quoted_from() {
        assert_eq!(
            unquote_from(b">>From x\n>From y\n>Fro\n"),
            b">>From x\nFrom y\n>Fro\n"
        );
    }
}

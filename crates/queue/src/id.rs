//! Queue ids in Postfix's long, non-repeating form (`enable_long_queue_ids = yes`).
//!
//! A long id is the concatenation of
//!
//! 1. the arrival time in whole seconds, base 52, at least 6 characters (zero-padded);
//! 2. the microseconds of that time, base 52, exactly 4 characters;
//! 3. the separator `z`;
//! 4. the inode number of the queue file, base 51 (so it never contains `z`).
//!
//! The alphabet is `0-9` plus the upper- and lower-case consonants
//! (`0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz`); base 51 drops the final `z`.
//! Digits are written most significant first. Example: `4Q3xTj6bKzz9sSZ`. The separator is
//! the *last* `z` at position 10 or later (the microsecond digits may themselves contain `z`).
//!
//! Postfix's short form (5 upper-case hex digits of microseconds followed by the inode number
//! in hex) is accepted by [`QueueId::parse`] so that ids from an imported Postfix queue still
//! parse, but this crate only generates long ids.
//!
//! Uniqueness comes from the inode: while a file exists no other file on the same file system
//! has its inode, so two live queue files never share an id, whichever process wrote them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{QueueError, Result};

const ALPHABET: &[u8; 52] = b"0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";
const SEC_BASE: u64 = 52;
const SEC_PAD: usize = 6;
const USEC_BASE: u64 = 52;
const USEC_PAD: usize = 4;
const TIME_PAD: usize = SEC_PAD + USEC_PAD;
const INUM_SEP: u8 = b'z';
const INUM_BASE: u64 = 51;
const SHORT_USEC_PAD: usize = 5;
/// Postfix's limit for a queue file name (VALID_HOSTNAME_LEN).
const MAX_ID_LEN: usize = 255;

/// A validated queue id; also the queue file's base name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

/// The parts of a long queue id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongIdParts {
    /// Seconds since the epoch.
    pub secs: u64,
    /// Microseconds within that second (0..1_000_000).
    pub usecs: u32,
    /// Inode number of the queue file when the id was assigned.
    pub inode: u64,
}

fn encode(mut val: u64, base: u64, pad: usize, out: &mut String) {
    let mut digits = Vec::with_capacity(12);
    while val != 0 {
        digits.push(ALPHABET[(val % base) as usize]);
        val /= base;
    }
    while digits.len() < pad {
        digits.push(b'0');
    }
    out.extend(digits.iter().rev().map(|&b| b as char));
}

fn digit_value(c: u8) -> Option<u64> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u64)
}

fn decode(s: &[u8], base: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut val: u64 = 0;
    for &c in s {
        let d = digit_value(c).filter(|&d| d < base)?;
        val = val.checked_mul(base)?.checked_add(d)?;
    }
    Some(val)
}

/// Position of the time/inode separator of a long id, as Postfix finds it.
fn long_separator(s: &[u8]) -> Option<usize> {
    s.iter()
        .rposition(|&c| c == INUM_SEP)
        .filter(|&p| p >= TIME_PAD)
}

impl QueueId {
    /// Builds the long id for a file created at `secs`.`usecs` with inode `inode`.
    pub fn new_long(secs: u64, usecs: u32, inode: u64) -> QueueId {
        let mut s = String::with_capacity(20);
        encode(secs, SEC_BASE, SEC_PAD, &mut s);
        encode(u64::from(usecs % 1_000_000), USEC_BASE, USEC_PAD, &mut s);
        s.push(INUM_SEP as char);
        encode(inode, INUM_BASE, 0, &mut s);
        QueueId(s)
    }

    /// Builds the long id for a file created at `time` with inode `inode`.
    pub fn from_time(time: SystemTime, inode: u64) -> QueueId {
        let d = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        QueueId::new_long(d.as_secs(), d.subsec_micros(), inode)
    }

    /// Parses and validates a queue id (long form, or Postfix's short hex form).
    pub fn parse(s: &str) -> Result<QueueId> {
        let b = s.as_bytes();
        let bad = || QueueError::InvalidId(s.to_string());
        if b.is_empty() || b.len() > MAX_ID_LEN {
            return Err(bad());
        }
        if let Some(sep) = long_separator(b) {
            let secs = decode(&b[..sep - USEC_PAD], SEC_BASE).ok_or_else(bad)?;
            let usecs = decode(&b[sep - USEC_PAD..sep], USEC_BASE).ok_or_else(bad)?;
            let _ = secs;
            if usecs >= 1_000_000 {
                return Err(bad());
            }
            decode(&b[sep + 1..], INUM_BASE).ok_or_else(bad)?;
            return Ok(QueueId(s.to_string()));
        }
        let short_ok = b.len() > SHORT_USEC_PAD
            && b.iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
        if short_ok {
            Ok(QueueId(s.to_string()))
        } else {
            Err(bad())
        }
    }

    /// The id as a string (also the file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for a long id.
    pub fn is_long(&self) -> bool {
        long_separator(self.0.as_bytes()).is_some()
    }

    /// Decodes a long id into its time and inode; `None` for a short id.
    pub fn long_parts(&self) -> Option<LongIdParts> {
        let b = self.0.as_bytes();
        let sep = long_separator(b)?;
        Some(LongIdParts {
            secs: decode(&b[..sep - USEC_PAD], SEC_BASE)?,
            usecs: u32::try_from(decode(&b[sep - USEC_PAD..sep], USEC_BASE)?).ok()?,
            inode: decode(&b[sep + 1..], INUM_BASE)?,
        })
    }

    /// The string whose leading characters name the hash subdirectories, as Postfix's
    /// `mail_queue_dir()`: for a long id the microseconds re-encoded as 5 upper-case hex
    /// digits (`%05X`), for a short id the id itself. Hashing on the microseconds spreads
    /// files evenly over 16 first-level directories.
    pub fn hash_key(&self) -> String {
        let b = self.0.as_bytes();
        match long_separator(b) {
            Some(sep) => {
                let usecs = decode(&b[sep - USEC_PAD..sep], USEC_BASE).unwrap_or(0);
                format!("{usecs:05X}")
            }
            None => self.0.clone(),
        }
    }

    /// The hash subdirectory names for `depth` levels (one character each, `_` when the key is
    /// shorter than the depth), as Postfix's `dir_forest()`.
    pub fn hash_dirs(&self, depth: u32) -> Vec<char> {
        let key: Vec<char> = self.hash_key().chars().collect();
        (0..depth as usize)
            .map(|i| key.get(i).copied().unwrap_or('_'))
            .collect()
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.0)
    }
}

impl std::str::FromStr for QueueId {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<QueueId> {
        QueueId::parse(s)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_parts() {
        for &(secs, usecs, inode) in &[
            (0u64, 0u32, 1u64),
            (1_700_000_000, 999_999, 123_456_789),
            (1_700_000_000, 0, u64::from(u32::MAX)),
            (52u64.pow(7), 51, 50),
            (4_000_000_000, 500_000, u64::MAX),
        ] {
            let id = QueueId::new_long(secs, usecs, inode);
            let parsed = QueueId::parse(id.as_str()).expect("parse");
            assert_eq!(parsed, id);
            assert!(parsed.is_long());
            assert_eq!(
                parsed.long_parts(),
                Some(LongIdParts { secs, usecs, inode })
            );
            let sep = id.as_str().rfind('z').expect("separator");
            assert!(sep >= TIME_PAD, "{id}");
        }
    }

    #[test]
    fn inode_part_never_contains_separator() {
        for inode in (0..200_000u64).chain([u64::MAX, u64::MAX / 51]) {
            let mut s = String::new();
            encode(inode, INUM_BASE, 0, &mut s);
            assert!(!s.contains('z'));
            if inode > 0 {
                assert_eq!(decode(s.as_bytes(), INUM_BASE), Some(inode));
            }
        }
    }

    #[test]
    fn postfix_example_parses() {
        // An id as shown by Postfix's mailq.
        let id = QueueId::parse("4Q3xTj6bKzz9sSZ").expect("parse");
        let p = id.long_parts().expect("long");
        assert_eq!(&id.as_str()[10..11], "z");
        // Re-encoding the parts gives the same string.
        assert_eq!(QueueId::new_long(p.secs, p.usecs, p.inode), id);
        assert!(p.usecs < 1_000_000);
        // 2023-ish.
        assert!(p.secs > 1_600_000_000 && p.secs < 1_800_000_000, "{p:?}");
    }

    #[test]
    fn width_and_alphabet() {
        let id = QueueId::new_long(1_700_000_000, 1, 2);
        // 6 seconds digits, 4 usec digits, 'z', inode.
        assert_eq!(id.as_str().len(), 12);
        assert_eq!(&id.as_str()[6..10], "0001");
        assert_eq!(&id.as_str()[10..], "z2");
        for c in id.as_str().chars() {
            assert!(!"AEIOUaeiou".contains(c));
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "abc",
            "../etc",
            "4Q3xTj6bKz.9sSZ",
            "4Q3xTj6bKzz",
            "4Q3xTjzzzzzz9",
            "hello world",
            "4Q3xTj6bKzzA",
        ] {
            assert!(QueueId::parse(s).is_err(), "{s:?}");
        }
        // Short Postfix ids.
        assert!(QueueId::parse("3F1A2B4C5D").is_ok());
        assert!(!QueueId::parse("3F1A2B4C5D").expect("short").is_long());
    }

    #[test]
    fn hash_key_uses_microseconds() {
        let id = QueueId::new_long(1_700_000_000, 0xABCDE, 77);
        assert_eq!(id.hash_key(), "ABCDE");
        assert_eq!(id.hash_dirs(2), vec!['A', 'B']);
        assert_eq!(id.hash_dirs(7), vec!['A', 'B', 'C', 'D', 'E', '_', '_']);
        let id = QueueId::new_long(1_700_000_000, 5, 77);
        assert_eq!(id.hash_dirs(1), vec!['0']);
        let short = QueueId::parse("3F1A2B4C5D").expect("short");
        assert_eq!(short.hash_dirs(2), vec!['3', 'F']);
    }
}

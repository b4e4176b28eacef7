//! The codec: length-encoded integers and strings, fixed-size little-endian integers, and
//! packet framing (a 3-byte length, a 1-byte sequence id; a payload of 0xffffff bytes or
//! more travels as several packets, the last one shorter than 0xffffff, possibly empty).

use crate::Error;
use std::io::{Read, Write};

/// The largest payload of one packet; a packet this long is continued by the next one.
pub const MAX_CHUNK: usize = 0xff_ffff;

fn short(what: &str) -> Error {
    Error::Protocol(format!("packet too short reading {what}"))
}

/// A cursor over a packet payload. Every read checks the length first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(short("bytes"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn uint(&mut self, n: usize) -> Result<u64, Error> {
        let b = self.bytes(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(self.uint(2)? as u16)
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(self.uint(4)? as u32)
    }

    /// A length-encoded integer; `None` for 0xfb (SQL NULL in a row).
    pub fn lenenc_int(&mut self) -> Result<Option<u64>, Error> {
        match self.u8()? {
            x @ 0..=0xfa => Ok(Some(u64::from(x))),
            0xfb => Ok(None),
            0xfc => self.uint(2).map(Some),
            0xfd => self.uint(3).map(Some),
            0xfe => self.uint(8).map(Some),
            _ => Err(Error::Protocol(
                "0xff is not a length-encoded integer".into(),
            )),
        }
    }

    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, Error> {
        match self.lenenc_int()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| short("string"))?;
                self.bytes(n).map(Some)
            }
        }
    }

    /// A NUL-terminated string (the NUL is consumed); without a NUL, the rest.
    pub fn null_str(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let s = &self.buf[..i];
                self.buf = &self.buf[i + 1..];
                s
            }
            None => self.rest(),
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

pub fn put_lenenc_int(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfa => out.push(n as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

pub fn put_lenenc_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_lenenc_int(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Frames a payload as packets starting at sequence id `*seq` (advanced past them).
pub fn frame(payload: &[u8], seq: &mut u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(*seq);
        *seq = seq.wrapping_add(1);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        // A chunk of exactly MAX_CHUNK bytes is followed by another, even an empty one.
        if n < MAX_CHUNK {
            return out;
        }
    }
}

/// Writes one payload (split as needed).
pub fn write_packet(w: &mut impl Write, payload: &[u8], seq: &mut u8) -> Result<(), Error> {
    w.write_all(&frame(payload, seq))?;
    w.flush()?;
    Ok(())
}

/// Reads one logical packet: the chunks of a split payload are joined. The sequence ids
/// must follow `*seq`; a payload longer than `max` bytes is refused before it is read.
pub fn read_packet(r: &mut impl Read, seq: &mut u8, max: usize) -> Result<Vec<u8>, Error> {
    let mut payload = Vec::new();
    loop {
        let mut h = [0u8; 4];
        r.read_exact(&mut h)?;
        let n = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if h[3] != *seq {
            return Err(Error::Protocol(format!(
                "packet sequence id {} where {} was expected",
                h[3], *seq
            )));
        }
        *seq = seq.wrapping_add(1);
        if payload.len() + n > max {
            return Err(Error::Protocol(format!("packet longer than {max} bytes")));
        }
        let start = payload.len();
        payload.resize(start + n, 0);
        r.read_exact(&mut payload[start..])?;
        if n < MAX_CHUNK {
            return Ok(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_ints() {
        for (n, enc) in [
            (0u64, vec![0u8]),
            (250, vec![0xfa]),
            (251, vec![0xfc, 0xfb, 0x00]),
            (0xffff, vec![0xfc, 0xff, 0xff]),
            (0x1_0000, vec![0xfd, 0x00, 0x00, 0x01]),
            (0xff_ffff, vec![0xfd, 0xff, 0xff, 0xff]),
            (0x100_0000, vec![0xfe, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0]),
            (
                u64::MAX,
                vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, n);
            assert_eq!(out, enc, "{n}");
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc_int().ok(), Some(Some(n)));
            assert!(r.is_empty());
        }
        assert_eq!(Reader::new(&[0xfb]).lenenc_int().ok(), Some(None));
        assert!(Reader::new(&[0xff]).lenenc_int().is_err());
        assert!(Reader::new(&[0xfd, 1]).lenenc_int().is_err());
        // A string longer than what is left is an error, not a panic.
        assert!(Reader::new(&[5, b'a']).lenenc_bytes().is_err());
        assert!(
            Reader::new(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .lenenc_bytes()
                .is_err()
        );
    }

    #[test]
    fn strings() {
        let mut v = Vec::new();
        put_lenenc_bytes(&mut v, b"abc");
        v.extend_from_slice(b"x\0yz");
        let mut r = Reader::new(&v);
        assert_eq!(r.lenenc_bytes().ok(), Some(Some(&b"abc"[..])));
        assert_eq!(r.null_str(), b"x");
        assert_eq!(r.null_str(), b"yz");
        assert!(r.is_empty());
    }

    #[test]
    fn framing_and_split_packets() {
        let mut seq = 3;
        let small = frame(b"hello", &mut seq);
        assert_eq!(small, b"\x05\x00\x00\x03hello");
        assert_eq!(seq, 4);
        // Exactly one full chunk is followed by an empty packet.
        let big = vec![7u8; MAX_CHUNK];
        let mut seq = 0;
        let f = frame(&big, &mut seq);
        assert_eq!(f.len(), MAX_CHUNK + 8);
        assert_eq!(seq, 2);
        assert_eq!(&f[MAX_CHUNK + 4..], &[0, 0, 0, 1]);
        let mut seq = 0;
        let back = read_packet(&mut &f[..], &mut seq, 1 << 26).expect("read");
        assert_eq!(back.len(), MAX_CHUNK);
        assert_eq!(seq, 2);
        // Larger than one chunk: two packets joined on read.
        let big = vec![9u8; MAX_CHUNK + 10];
        let mut seq = 0;
        let f = frame(&big, &mut seq);
        let mut seq = 0;
        assert_eq!(
            read_packet(&mut &f[..], &mut seq, 1 << 26)
                .map(|p| p.len())
                .ok(),
            Some(MAX_CHUNK + 10)
        );
        // Limits and sequence errors.
        let mut seq = 0;
        assert!(read_packet(&mut &f[..], &mut seq, 1000).is_err());
        let mut seq = 5;
        assert!(read_packet(&mut &small[..], &mut seq, 1000).is_err());
        let mut seq = 3;
        assert!(read_packet(&mut &small[..4], &mut seq, 1000).is_err());
    }
}

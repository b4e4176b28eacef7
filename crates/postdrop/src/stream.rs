//! What `sendmail` writes into `postdrop`'s standard input: one ipc frame holding the
//! [`Submission`](crate::Submission), then the content as chunks (`u32` big-endian length,
//! then that many bytes), ended by a zero-length chunk. A stream that ends without the
//! zero-length chunk (sendmail killed, pipe broken) is an error, so postdrop never queues
//! half a message.

use std::io::{self, Read, Write};

/// Largest chunk accepted.
pub const MAX_CHUNK: u32 = 1 << 20;

/// Writes the envelope frame.
pub fn write_submission<W: Write>(w: &mut W, sub: &crate::Submission) -> io::Result<()> {
    oxipost_ipc::write_frame(w, sub)
}

/// Reads the envelope frame.
pub fn read_submission<R: Read>(r: &mut R) -> io::Result<crate::Submission> {
    oxipost_ipc::read_frame(r)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

/// Writes one content chunk (nothing for an empty slice: use [`write_end`]).
pub fn write_chunk<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    for part in data.chunks(MAX_CHUNK as usize) {
        w.write_all(&(part.len() as u32).to_be_bytes())?;
        w.write_all(part)?;
    }
    Ok(())
}

/// Writes the end of the content.
pub fn write_end<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&0u32.to_be_bytes())?;
    w.flush()
}

/// Reads content chunks as a byte stream; ends cleanly only at the zero-length chunk.
pub struct ChunkReader<R> {
    inner: R,
    left: u32,
    done: bool,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkReader {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut len = [0u8; 4];
            self.inner.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len);
            if len > MAX_CHUNK {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk too large",
                ));
            }
            if len == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = len;
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u32;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let sub = crate::Submission {
            sender: "a@b".into(),
            recipients: vec!["c@d".into()],
            ..crate::Submission::default()
        };
        let mut buf = Vec::new();
        write_submission(&mut buf, &sub).expect("w");
        write_chunk(&mut buf, b"hello ").expect("w");
        write_chunk(&mut buf, b"world").expect("w");
        write_end(&mut buf).expect("w");
        let mut r = &buf[..];
        assert_eq!(read_submission(&mut r).expect("sub"), sub);
        let mut out = Vec::new();
        ChunkReader::new(r).read_to_end(&mut out).expect("content");
        assert_eq!(out, b"hello world");
        let cut = &buf[..buf.len() - 4];
        let mut r = cut;
        read_submission(&mut r).expect("sub");
        assert!(ChunkReader::new(r).read_to_end(&mut Vec::new()).is_err());
    }
}

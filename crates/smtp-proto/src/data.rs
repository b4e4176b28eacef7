//! DATA content decoding: dot-unstuffing and end-of-data detection.
//!
//! The only end of data is `<CR><LF>.<CR><LF>` where the first CRLF is the
//! one that ended the previous line (or the DATA command itself). A bare LF
//! never starts a line here, so `<LF>.<LF>`, `<LF>.<CR><LF>` and `<CR>.<CR>`
//! are content, not an end: this is the SMTP smuggling defence
//! (CVE-2023-51764). Long lines are passed through unsplit: the core has no
//! line buffer in DATA, so the length of a content line costs nothing.

use crate::config::BareNewline;

/// Where the decoder is relative to line structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF).
    LineStart,
    /// Saw `.` at line start.
    Dot,
    /// Saw `.<CR>` at line start.
    DotCr,
    /// Inside a line.
    Mid,
    /// Saw `<CR>` inside a line; it is not yet emitted.
    Cr,
}

/// Why [`DotDecoder::decode`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Input consumed or the sink is full.
    More,
    /// The end-of-data line was consumed.
    End,
    /// A bare LF arrived in [`BareNewline::Reject`] mode; it was consumed.
    BareLf,
}

/// Incremental decoder; holds no data, only a few bytes of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DotDecoder {
    state: State,
    mode: BareNewline,
}

impl DotDecoder {
    /// A decoder positioned right after the DATA command's CRLF.
    pub fn new(mode: BareNewline) -> Self {
        DotDecoder {
            state: State::LineStart,
            mode,
        }
    }

    /// Decodes from `input` into `sink` until the end of data, the end of
    /// input, or `sink` holding at least `cap` bytes. Returns the number of
    /// input bytes consumed. `sink` grows by at most `cap + 2` bytes.
    pub fn decode(&mut self, input: &[u8], sink: &mut Vec<u8>, cap: usize) -> (usize, Decoded) {
        for (i, &b) in input.iter().enumerate() {
            if sink.len() >= cap {
                return (i, Decoded::More);
            }
            match self.byte(b, sink) {
                Decoded::More => {}
                done => return (i + 1, done),
            }
        }
        (input.len(), Decoded::More)
    }

    fn byte(&mut self, b: u8, sink: &mut Vec<u8>) -> Decoded {
        match self.state {
            State::LineStart if b == b'.' => self.state = State::Dot,
            State::Dot if b == b'\r' => self.state = State::DotCr,
            State::DotCr if b == b'\n' => return Decoded::End,
            // `.<CR>x`: the dot was stuffing; the CR is pending as usual.
            State::DotCr => {
                self.state = State::Cr;
                return self.byte(b, sink);
            }
            // Unstuffing: the leading dot is dropped, the rest of the line kept.
            State::LineStart | State::Dot | State::Mid => return self.mid(b, sink),
            State::Cr => match b {
                b'\n' => {
                    sink.extend_from_slice(b"\r\n");
                    self.state = State::LineStart;
                }
                b'\r' => sink.push(b'\r'),
                _ => {
                    sink.push(b'\r');
                    return self.mid(b, sink);
                }
            },
        }
        Decoded::More
    }

    fn mid(&mut self, b: u8, sink: &mut Vec<u8>) -> Decoded {
        self.state = State::Mid;
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => match self.mode {
                BareNewline::No => sink.push(b'\n'),
                BareNewline::Normalize => sink.extend_from_slice(b"\r\n"),
                BareNewline::Reject => return Decoded::BareLf,
            },
            _ => sink.push(b),
        }
        Decoded::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: BareNewline, input: &[u8]) -> (Vec<u8>, Decoded, usize) {
        let mut d = DotDecoder::new(mode);
        let mut sink = Vec::new();
        let (n, r) = d.decode(input, &mut sink, usize::MAX);
        (sink, r, n)
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf() {
        let (s, r, n) = run(BareNewline::No, b"a\r\n.\r\nMAIL");
        assert_eq!((s.as_slice(), r, n), (&b"a\r\n"[..], Decoded::End, 6));
        let (_, r, _) = run(BareNewline::No, b".\r\n");
        assert_eq!(r, Decoded::End);
    }

    #[test]
    fn smuggling_patterns_are_content() {
        for mode in [BareNewline::No, BareNewline::Normalize] {
            for p in [
                &b"a\n.\nb"[..],
                b"a\n.\r\nb",
                b"a\r.\rb",
                b"a\r\n.\nb",
                b"a\r.\r\nb",
            ] {
                let (_, r, _) = run(mode, p);
                assert_eq!(r, Decoded::More, "{p:?} {mode:?}");
            }
        }
        let (s, _, _) = run(BareNewline::No, b"a\n.\nb\r.\rc");
        assert_eq!(s, b"a\n.\nb\r.\rc");
    }

    #[test]
    fn unstuffing() {
        let (s, r, _) = run(BareNewline::No, b"..a\r\n.b\r\n..\r\n.\r\n");
        assert_eq!((s.as_slice(), r), (&b".a\r\nb\r\n.\r\n"[..], Decoded::End));
        let (s, _, _) = run(BareNewline::No, b".\rx");
        assert_eq!(s, b"\rx");
    }

    #[test]
    fn bare_lf_modes() {
        let (s, _, _) = run(BareNewline::Normalize, b"a\nb");
        assert_eq!(s, b"a\r\nb");
        let (s, r, n) = run(BareNewline::Reject, b"ab\ncd");
        assert_eq!((s.as_slice(), r, n), (&b"ab"[..], Decoded::BareLf, 3));
    }

    #[test]
    fn split_input_is_equivalent() {
        let input = b"x\r\n..y\r\n\r\r\n.\r\n";
        let mut d = DotDecoder::new(BareNewline::No);
        let mut sink = Vec::new();
        let mut end = None;
        for (i, b) in input.iter().enumerate() {
            if let (1, Decoded::End) = d.decode(std::slice::from_ref(b), &mut sink, usize::MAX) {
                end = Some(i);
            }
        }
        assert_eq!(end, Some(input.len() - 1));
        assert_eq!(sink, b"x\r\n.y\r\n\r\r\n");
    }

    #[test]
    fn respects_cap() {
        let mut d = DotDecoder::new(BareNewline::No);
        let mut sink = Vec::new();
        let (n, r) = d.decode(b"abcdef", &mut sink, 4);
        assert_eq!((n, r, sink.len()), (4, Decoded::More, 4));
    }
}

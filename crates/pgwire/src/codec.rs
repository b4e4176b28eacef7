//! The protocol v3 messages this client sends and understands, as bytes (sans-IO).
//! A backend message is `type byte, int32 length (including itself), body`; lengths are
//! checked against [`MAX_MESSAGE`] before anything is allocated.

use md5::{Digest, Md5};

use crate::Error;

/// The largest backend message accepted (lookup results are small; this bounds memory
/// against a hostile or confused server).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Frontend (client) messages.
#[derive(Debug)]
pub enum Frontend<'a> {
    /// The start-up packet, protocol 3.0, with `name, value` parameters.
    Startup {
        params: &'a [(&'a str, &'a str)],
    },
    /// `PasswordMessage`: a cleartext or md5 password.
    Password(&'a [u8]),
    /// `SASLInitialResponse`.
    SaslInitial {
        mechanism: &'a str,
        data: &'a [u8],
    },
    /// `SASLResponse`.
    SaslResponse(&'a [u8]),
    Query(&'a str),
    Terminate,
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    // Frontend messages are built from configuration and keys; they are far below 2 GiB.
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

impl Frontend<'_> {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frontend::Startup { params } => {
                let mut body = 196_608u32.to_be_bytes().to_vec(); // 3.0
                for (k, v) in *params {
                    cstr(&mut body, k);
                    cstr(&mut body, v);
                }
                body.push(0);
                let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
                let mut out = len.to_be_bytes().to_vec();
                out.extend_from_slice(&body);
                out
            }
            Frontend::Password(p) => {
                let mut body = p.to_vec();
                body.push(0);
                framed(b'p', &body)
            }
            Frontend::SaslInitial { mechanism, data } => {
                let mut body = Vec::new();
                cstr(&mut body, mechanism);
                let n = i32::try_from(data.len()).unwrap_or(i32::MAX);
                body.extend_from_slice(&n.to_be_bytes());
                body.extend_from_slice(data);
                framed(b'p', &body)
            }
            Frontend::SaslResponse(d) => framed(b'p', d),
            Frontend::Query(q) => {
                let mut body = Vec::new();
                cstr(&mut body, q);
                framed(b'Q', &body)
            }
            Frontend::Terminate => framed(b'X', &[]),
        }
    }
}

/// The fields of an `ErrorResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl ErrorFields {
    pub fn into_error(self) -> Error {
        Error::Server {
            severity: self.severity,
            code: self.code,
            message: self.message,
        }
    }
}

/// Backend (server) messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    AuthOk,
    AuthCleartext,
    AuthMd5([u8; 4]),
    AuthSasl(Vec<String>),
    AuthSaslContinue(Vec<u8>),
    AuthSaslFinal(Vec<u8>),
    AuthOther(u32),
    ParameterStatus(String, String),
    BackendKeyData,
    ReadyForQuery(u8),
    RowDescription(Vec<String>),
    DataRow(Vec<Option<String>>),
    CommandComplete,
    EmptyQuery,
    Error(ErrorFields),
    Notice,
    /// A message type this client ignores.
    Other(u8),
}

struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("message shorter than its contents".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let end = self
            .0
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated string")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
}

/// Decodes one backend message from the front of `buf`: `Ok(None)` when more bytes are
/// needed, `Ok(Some((message, bytes used)))`, or an error for a malformed message.
pub fn decode(buf: &[u8]) -> Result<Option<(Backend, usize)>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let kind = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(format!(
            "bad message length {len} (type {:?})",
            kind as char
        ));
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    let mut b = Body(&buf[5..len + 1]);
    let msg = match kind {
        b'R' => match b.i32()? {
            0 => Backend::AuthOk,
            3 => Backend::AuthCleartext,
            5 => {
                let s = b.take(4)?;
                Backend::AuthMd5([s[0], s[1], s[2], s[3]])
            }
            10 => {
                let mut mechs = Vec::new();
                loop {
                    let m = b.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechs.push(m);
                }
                Backend::AuthSasl(mechs)
            }
            11 => Backend::AuthSaslContinue(b.0.to_vec()),
            12 => Backend::AuthSaslFinal(b.0.to_vec()),
            n => Backend::AuthOther(n as u32),
        },
        b'S' => {
            let k = b.cstr()?;
            let v = b.cstr()?;
            Backend::ParameterStatus(k, v)
        }
        b'K' => Backend::BackendKeyData,
        b'Z' => Backend::ReadyForQuery(b.take(1)?[0]),
        b'T' => {
            let n = b.u16()?;
            let mut cols = Vec::with_capacity(usize::from(n).min(1024));
            for _ in 0..n {
                cols.push(b.cstr()?);
                b.take(18)?;
            }
            Backend::RowDescription(cols)
        }
        b'D' => {
            let n = b.u16()?;
            let mut row = Vec::with_capacity(usize::from(n).min(1024));
            for _ in 0..n {
                let l = b.i32()?;
                if l < 0 {
                    row.push(None);
                } else {
                    let v = b.take(l as usize)?;
                    row.push(Some(String::from_utf8_lossy(v).into_owned()));
                }
            }
            Backend::DataRow(row)
        }
        b'C' => Backend::CommandComplete,
        b'I' => Backend::EmptyQuery,
        b'E' => {
            let mut f = ErrorFields::default();
            let mut localized = String::new();
            loop {
                let t = b.take(1)?[0];
                if t == 0 {
                    break;
                }
                let v = b.cstr()?;
                match t {
                    b'V' => f.severity = v,
                    b'S' => localized = v,
                    b'C' => f.code = v,
                    b'M' => f.message = v,
                    _ => {}
                }
            }
            if f.severity.is_empty() {
                f.severity = localized;
            }
            Backend::Error(f)
        }
        b'N' => Backend::Notice,
        k => Backend::Other(k),
    };
    Ok(Some((msg, len + 1)))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The md5 method's answer: `"md5" + md5hex(md5hex(password + user) + salt)`.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex(&Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize());
    let outer = Md5::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("md5{}", hex(&outer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frontend_bytes() {
        assert_eq!(
            Frontend::Query("SELECT 1").encode(),
            b"Q\0\0\0\x0dSELECT 1\0".to_vec()
        );
        assert_eq!(Frontend::Terminate.encode(), b"X\0\0\0\x04".to_vec());
        let s = Frontend::Startup {
            params: &[("user", "u")],
        }
        .encode();
        assert_eq!(s, b"\0\0\0\x10\0\x03\0\0user\0u\0\0".to_vec());
        let i = Frontend::SaslInitial {
            mechanism: "M",
            data: b"xy",
        }
        .encode();
        assert_eq!(i, b"p\0\0\0\x0cM\0\0\0\0\x02xy".to_vec());
    }

    #[test]
    fn backend_messages() {
        let mut buf = msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        buf.extend(msg(b'S', b"standard_conforming_strings\0on\0"));
        let mut t = 2u16.to_be_bytes().to_vec();
        for n in ["a", "b"] {
            t.extend_from_slice(n.as_bytes());
            t.push(0);
            t.extend_from_slice(&[0; 18]);
        }
        buf.extend(msg(b'T', &t));
        let mut d = 2u16.to_be_bytes().to_vec();
        d.extend_from_slice(&3i32.to_be_bytes());
        d.extend_from_slice(b"x'y");
        d.extend_from_slice(&(-1i32).to_be_bytes());
        buf.extend(msg(b'D', &d));
        buf.extend(msg(b'E', b"SERROR\0VERROR\0C42P01\0Mno table\0\0"));
        buf.extend(msg(b'Z', b"I"));
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((m, n)) = decode(&buf[at..]).expect("valid") {
            out.push(m);
            at += n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            out,
            vec![
                Backend::AuthMd5([1, 2, 3, 4]),
                Backend::ParameterStatus("standard_conforming_strings".into(), "on".into()),
                Backend::RowDescription(vec!["a".into(), "b".into()]),
                Backend::DataRow(vec![Some("x'y".into()), None]),
                Backend::Error(ErrorFields {
                    severity: "ERROR".into(),
                    code: "42P01".into(),
                    message: "no table".into()
                }),
                Backend::ReadyForQuery(b'I'),
            ]
        );
        // Partial input waits for more; garbage lengths and truncated bodies are errors.
        assert_eq!(decode(&buf[..3]), Ok(None));
        assert_eq!(decode(&buf[..8]), Ok(None));
        assert!(decode(b"Z\0\0\0\x02").is_err());
        assert!(decode(b"Z\x7f\xff\xff\xff").is_err());
        assert!(decode(&msg(b'D', &[0, 1, 0, 0, 0, 9, b'a'])).is_err());
        assert!(decode(&msg(b'S', b"unterminated")).is_err());
        assert!(
            decode(&msg(b'R', &[0, 0, 0, 10, b'S', b'C', 0, 0]))
                .is_ok_and(|m| m.is_some_and(|(m, _)| m == Backend::AuthSasl(vec!["SC".into()])))
        );
    }

    #[test]
    fn md5_answer() {
        // md5(md5("secret" + "alice") hex + salt), checked against PostgreSQL's formula.
        let inner = hex(&Md5::digest(b"secretalice"));
        let mut outer_in = inner.into_bytes();
        outer_in.extend_from_slice(&[1, 2, 3, 4]);
        let want = format!("md5{}", hex(&Md5::digest(&outer_in)));
        assert_eq!(md5_password("alice", "secret", [1, 2, 3, 4]), want);
        assert_eq!(want.len(), 35);
    }
}

//! The milter wire format (Sendmail's `mfdef.h`, protocol version 6), without IO: a packet
//! is a 4-byte big-endian length (command byte included), one command byte and its data.
//! [`Command`] is what the MTA sends, [`Response`] what a milter answers; decoding never
//! panics on peer bytes and caps a packet before allocating.

/// The protocol version oxipost offers (Postfix's default `milter_protocol = 6`).
pub const VERSION: u32 = 6;
/// The largest packet accepted from a milter (libmilter's `MILTER_CHUNK_SIZE` is 64 KiB;
/// headers and replies are far smaller).
pub const MAX_PACKET: usize = 1 << 20;
/// The largest body chunk sent in one `SMFIC_BODY`.
pub const BODY_CHUNK: usize = 65535;

/// `SMFIF_*`: modifications a milter may ask for.
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    /// Everything oxipost can apply.
    pub const ALL: u32 = 0x1FF;
}

/// `SMFIP_*`: protocol steps a milter may skip or not answer.
pub mod step {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Everything oxipost supports (what Postfix offers).
    pub const ALL: u32 = 0x1FFFFF;

    /// The steps a protocol version knows (as Postfix offers them): version 2 the six
    /// `SMFIP_NO*` of connect..headers, 3 adds end of header, 4 and 5 unknown, DATA and
    /// no-reply headers, 6 everything.
    pub fn for_version(version: u32) -> u32 {
        match version {
            0..=2 => 0x3F,
            3 => 0x7F,
            4 | 5 => 0x3FF,
            _ => ALL,
        }
    }
}

/// The macro stages of `SMFIR_SETSYMLIST` (`SMFIM_*`), in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Eom,
        Stage::Eoh,
    ];

    fn from_u32(n: u32) -> Option<Stage> {
        Stage::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// The command byte the stage's macros are sent for.
    pub fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Eom => b'E',
            Stage::Eoh => b'N',
        }
    }
}

/// The client's address family in `SMFIC_CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Inet4 { port: u16, addr: String },
    Inet6 { port: u16, addr: String },
    Unix(String),
    Unknown,
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    Macros {
        command: u8,
        pairs: Vec<(String, String)>,
    },
    Connect {
        hostname: String,
        family: Family,
    },
    Helo(String),
    /// `MAIL FROM` arguments: `<sender>` first, then ESMTP parameters.
    Mail(Vec<String>),
    Rcpt(Vec<String>),
    Data,
    Header {
        name: String,
        value: String,
    },
    Eoh,
    Body(Vec<u8>),
    Eom,
    Abort,
    /// An SMTP command smtpd did not recognize, as the client sent it.
    Unknown(String),
    Quit,
    QuitNewConnection,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // NUL ends a string on the wire: a peer value never contains one.
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

impl Command {
    /// The packet bytes (length, command, data).
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        let cmd = match self {
            Command::OptNeg {
                version,
                actions,
                steps,
            } => {
                d.extend(version.to_be_bytes());
                d.extend(actions.to_be_bytes());
                d.extend(steps.to_be_bytes());
                b'O'
            }
            Command::Macros { command, pairs } => {
                d.push(*command);
                for (n, v) in pairs {
                    push_str(&mut d, n);
                    push_str(&mut d, v);
                }
                b'D'
            }
            Command::Connect { hostname, family } => {
                push_str(&mut d, hostname);
                match family {
                    Family::Inet4 { port, addr } | Family::Inet6 { port, addr } => {
                        d.push(if matches!(family, Family::Inet4 { .. }) {
                            b'4'
                        } else {
                            b'6'
                        });
                        d.extend(port.to_be_bytes());
                        push_str(&mut d, addr);
                    }
                    Family::Unix(path) => {
                        d.push(b'L');
                        d.extend(0u16.to_be_bytes());
                        push_str(&mut d, path);
                    }
                    Family::Unknown => d.push(b'U'),
                }
                b'C'
            }
            Command::Helo(h) => {
                push_str(&mut d, h);
                b'H'
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args {
                    push_str(&mut d, a);
                }
                if matches!(self, Command::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                }
            }
            Command::Data => b'T',
            Command::Header { name, value } => {
                push_str(&mut d, name);
                push_str(&mut d, value);
                b'L'
            }
            Command::Eoh => b'N',
            Command::Body(b) => {
                d.extend_from_slice(b);
                b'B'
            }
            Command::Eom => b'E',
            Command::Abort => b'A',
            Command::Unknown(line) => {
                push_str(&mut d, line);
                b'U'
            }
            Command::Quit => b'Q',
            Command::QuitNewConnection => b'K',
        };
        let len = u32::try_from(d.len() + 1).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(d.len() + 5);
        out.extend(len.to_be_bytes());
        out.push(cmd);
        out.extend(d);
        out
    }
}

/// What a milter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The option negotiation answer; `macros` from `SMFIR_SETSYMLIST` data when given.
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
        macros: Vec<(Stage, Vec<String>)>,
    },
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// `SMFIR_REPLYCODE`: a full SMTP reply (`550 5.7.1 text`).
    ReplyCode(String),
    Skip,
    Progress,
    /// `SMFIR_CONN_FAIL` / `SMFIR_SHUTDOWN`: treated as a temporary failure.
    Shutdown,
    Quarantine(String),
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `value` empty: delete the `index`th header called `name` (1-based).
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    ReplaceBody(Vec<u8>),
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChangeFrom {
        from: String,
        args: Option<String>,
    },
}

/// A milter's packet that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage(pub String);

impl std::fmt::Display for Garbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Splits NUL-terminated strings (a missing last NUL is tolerated).
fn strings(d: &[u8]) -> Vec<String> {
    let d = d.strip_suffix(&[0]).unwrap_or(d);
    if d.is_empty() {
        return Vec::new();
    }
    d.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = d.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

impl Response {
    /// Decodes one packet body (command byte and data, without the length).
    pub fn decode(packet: &[u8]) -> Result<Response, Garbage> {
        let (&cmd, d) = packet
            .split_first()
            .ok_or_else(|| Garbage("empty packet".into()))?;
        let bad = |what: &str| Garbage(format!("bad {what} packet"));
        let two = |what: &str| -> Result<(String, String), Garbage> {
            let mut s = strings(d).into_iter();
            match (s.next(), s.next()) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err(bad(what)),
            }
        };
        Ok(match cmd {
            b'O' => {
                let (Some(version), Some(actions), Some(steps)) =
                    (u32_at(d, 0), u32_at(d, 4), u32_at(d, 8))
                else {
                    return Err(bad("option negotiation"));
                };
                let mut macros = Vec::new();
                let mut rest = d.get(12..).unwrap_or(&[]);
                while rest.len() >= 4 {
                    let stage = u32_at(rest, 0).and_then(Stage::from_u32);
                    let body = &rest[4..];
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    let list = String::from_utf8_lossy(&body[..end]);
                    if let Some(stage) = stage {
                        macros.push((stage, list.split_whitespace().map(str::to_string).collect()));
                    }
                    rest = body.get(end + 1..).unwrap_or(&[]);
                }
                Response::OptNeg {
                    version,
                    actions,
                    steps,
                    macros,
                }
            }
            b'a' => Response::Accept,
            b'c' => Response::Continue,
            b'd' => Response::Discard,
            b'r' => Response::Reject,
            b't' => Response::Tempfail,
            b's' => Response::Skip,
            b'p' => Response::Progress,
            b'f' | b'4' => Response::Shutdown,
            b'y' => {
                let text = strings(d)
                    .into_iter()
                    .next()
                    .ok_or_else(|| bad("reply code"))?;
                Response::ReplyCode(text)
            }
            b'q' => Response::Quarantine(strings(d).into_iter().next().unwrap_or_default()),
            b'h' => {
                let (name, value) = two("add header")?;
                Response::AddHeader { name, value }
            }
            b'i' | b'm' => {
                let index = u32_at(d, 0).ok_or_else(|| bad("header change"))?;
                let mut s = strings(&d[4..]).into_iter();
                let name = s.next().ok_or_else(|| bad("header change"))?;
                let value = s.next().unwrap_or_default();
                if cmd == b'i' {
                    Response::InsertHeader { index, name, value }
                } else {
                    Response::ChangeHeader { index, name, value }
                }
            }
            b'b' => Response::ReplaceBody(d.to_vec()),
            b'+' | b'2' => {
                let mut s = strings(d).into_iter();
                let rcpt = s.next().ok_or_else(|| bad("add recipient"))?;
                Response::AddRcpt {
                    rcpt,
                    args: s.next().filter(|a| !a.is_empty()),
                }
            }
            b'-' => Response::DelRcpt(
                strings(d)
                    .into_iter()
                    .next()
                    .ok_or_else(|| bad("delete recipient"))?,
            ),
            b'e' => {
                let mut s = strings(d).into_iter();
                let from = s.next().ok_or_else(|| bad("change sender"))?;
                Response::ChangeFrom {
                    from,
                    args: s.next().filter(|a| !a.is_empty()),
                }
            }
            other => {
                return Err(Garbage(format!("unknown response code 0x{other:02x}")));
            }
        })
    }

    /// Encodes a response (for test milters).
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        let cmd = match self {
            Response::OptNeg {
                version,
                actions,
                steps,
                macros,
            } => {
                d.extend(version.to_be_bytes());
                d.extend(actions.to_be_bytes());
                d.extend(steps.to_be_bytes());
                for (stage, names) in macros {
                    d.extend((*stage as u32).to_be_bytes());
                    push_str(&mut d, &names.join(" "));
                }
                b'O'
            }
            Response::Accept => b'a',
            Response::Continue => b'c',
            Response::Discard => b'd',
            Response::Reject => b'r',
            Response::Tempfail => b't',
            Response::Skip => b's',
            Response::Progress => b'p',
            Response::Shutdown => b'4',
            Response::ReplyCode(t) => {
                push_str(&mut d, t);
                b'y'
            }
            Response::Quarantine(t) => {
                push_str(&mut d, t);
                b'q'
            }
            Response::AddHeader { name, value } => {
                push_str(&mut d, name);
                push_str(&mut d, value);
                b'h'
            }
            Response::InsertHeader { index, name, value }
            | Response::ChangeHeader { index, name, value } => {
                d.extend(index.to_be_bytes());
                push_str(&mut d, name);
                push_str(&mut d, value);
                if matches!(self, Response::InsertHeader { .. }) {
                    b'i'
                } else {
                    b'm'
                }
            }
            Response::ReplaceBody(b) => {
                d.extend_from_slice(b);
                b'b'
            }
            Response::AddRcpt { rcpt, args } => {
                push_str(&mut d, rcpt);
                if let Some(a) = args {
                    push_str(&mut d, a);
                    b'2'
                } else {
                    b'+'
                }
            }
            Response::DelRcpt(r) => {
                push_str(&mut d, r);
                b'-'
            }
            Response::ChangeFrom { from, args } => {
                push_str(&mut d, from);
                if let Some(a) = args {
                    push_str(&mut d, a);
                }
                b'e'
            }
        };
        let len = u32::try_from(d.len() + 1).unwrap_or(u32::MAX);
        let mut out = len.to_be_bytes().to_vec();
        out.push(cmd);
        out.extend(d);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_libmilter_expects() {
        let c = Command::OptNeg {
            version: 6,
            actions: action::ALL,
            steps: step::ALL,
        };
        assert_eq!(
            c.encode(),
            vec![
                0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff
            ]
        );
        let c = Command::Connect {
            hostname: "h".into(),
            family: Family::Inet4 {
                port: 25,
                addr: "1.2.3.4".into(),
            },
        };
        assert_eq!(c.encode(), b"\0\0\0\x0eCh\x004\x00\x191.2.3.4\0".to_vec());
        let c = Command::Macros {
            command: b'M',
            pairs: vec![("{mail_addr}".into(), "a@b".into())],
        };
        assert_eq!(c.encode(), b"\0\0\0\x12DM{mail_addr}\0a@b\0".to_vec());
        assert_eq!(Command::Eom.encode(), vec![0, 0, 0, 1, b'E']);
    }

    #[test]
    fn responses_round_trip() {
        let all = vec![
            Response::OptNeg {
                version: 6,
                actions: 0x3f,
                steps: step::NR_HDR,
                macros: vec![(Stage::Mail, vec!["{mail_addr}".into(), "i".into()])],
            },
            Response::Accept,
            Response::Continue,
            Response::Discard,
            Response::Reject,
            Response::Tempfail,
            Response::Skip,
            Response::ReplyCode("550 5.7.1 go away".into()),
            Response::Quarantine("suspicious".into()),
            Response::AddHeader {
                name: "X-A".into(),
                value: "1".into(),
            },
            Response::InsertHeader {
                index: 0,
                name: "X-B".into(),
                value: "2".into(),
            },
            Response::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: String::new(),
            },
            Response::ReplaceBody(b"new\r\n".to_vec()),
            Response::AddRcpt {
                rcpt: "<x@y>".into(),
                args: None,
            },
            Response::DelRcpt("<z@y>".into()),
            Response::ChangeFrom {
                from: "<n@y>".into(),
                args: None,
            },
        ];
        for r in all {
            let bytes = r.encode();
            assert_eq!(Response::decode(&bytes[4..]), Ok(r.clone()), "{r:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Response::decode(b"").is_err());
        assert!(Response::decode(b"Z").is_err());
        assert!(Response::decode(b"O\0\0").is_err());
        assert!(Response::decode(b"i\0").is_err());
        assert!(Response::decode(b"h").is_err());
        assert!(Response::decode(b"y").is_err());
    }
}

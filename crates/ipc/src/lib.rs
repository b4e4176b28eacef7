//! Every message that crosses a Unix socket between the suite's processes (other than
//! master's status records and one-byte triggers): length-prefixed frames (u32 big-endian
//! length, then a JSON payload), capped before allocating, and the typed requests and
//! replies carried in them. The server speaks first with a [`Hello`] naming the protocol
//! and version, so a stale peer fails loudly instead of misreading. Unknown fields are
//! ignored, so a protocol can grow fields without a version bump. This crate does no
//! socket work beyond reading and writing frames on any `Read`/`Write`.

pub mod auth;
pub mod showq;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{self, Read, Write};

/// No frame between the suite's processes is anywhere near this; a larger length is a
/// corrupt or hostile peer and is refused before any allocation.
pub const MAX_FRAME: u32 = 1 << 20;

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream before a frame starts.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The first frame a server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub version: u32,
    /// Optional abilities of this server (e.g. [`CAP_BATCH`]); older peers send none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// A delivery agent that accepts a [`DeliveryBatch`] (several messages in one request, made
/// durable together).
pub const CAP_BATCH: &str = "batch";

impl Hello {
    pub fn new(protocol: &str, version: u32) -> Hello {
        Hello {
            protocol: protocol.to_string(),
            version,
            capabilities: Vec::new(),
        }
    }

    pub fn with_capability(mut self, cap: &str) -> Hello {
        self.capabilities.push(cap.to_string());
        self
    }

    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// Reads the peer's hello and checks it is the expected protocol and version.
    pub fn expect<R: Read>(r: &mut R, protocol: &str, version: u32) -> io::Result<Hello> {
        let h: Hello = read_frame(r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        if h.protocol != protocol || h.version != version {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "protocol mismatch: want {protocol} v{version}, peer speaks {} v{}",
                    h.protocol, h.version
                ),
            ));
        }
        Ok(h)
    }
}

/// qmgr -> delivery agent (local, virtual, smtp, lmtp, error, discard).
pub const DELIVERY_PROTOCOL: &str = "delivery_request";
pub const DELIVERY_VERSION: u32 = 1;

/// One recipient of a delivery request, by its index in the queue file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptRef {
    pub index: u32,
    pub address: String,
    #[serde(default)]
    pub orcpt: Option<String>,
    /// DSN NOTIFY as written in RCPT TO (e.g. `SUCCESS,FAILURE`), if any.
    #[serde(default)]
    pub notify: Option<String>,
}

/// Deliver one queued message to some of its recipients. The agent reads the content from
/// the queue file itself (as Postfix's agents do), so only the envelope travels here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    pub queue_id: String,
    /// Absolute path of the queue file.
    pub path: String,
    /// Byte offset and length of the message content in the queue file.
    pub content_offset: u64,
    pub content_length: u64,
    pub sender: String,
    /// master.cf transport name and next hop (`local`, `smtp:[host]:25`, ...).
    pub transport: String,
    pub nexthop: String,
    pub recipients: Vec<RcptRef>,
    /// Client attributes for headers and logs (client name/addr, helo, protocol).
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    /// Arrival time, seconds since the epoch (for `delay=` in logs).
    #[serde(default)]
    pub arrival: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Delivered,
    Deferred,
    Bounced,
}

/// The fate of one recipient: RFC 3463 status (`2.0.0`, `4.2.2`, `5.1.1`) and the text
/// that goes into logs and DSNs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptResult {
    pub index: u32,
    pub outcome: Outcome,
    pub status: String,
    pub text: String,
    /// Where it went (`local`, a mailbox path, `host[addr]:port`), for `relay=` in logs.
    #[serde(default)]
    pub relay: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReply {
    pub results: Vec<RcptResult>,
}

/// Several requests for one destination at once, sent only to agents whose [`Hello`] has
/// [`CAP_BATCH`]: the agent may make all of them durable with one round of syncs. The
/// reply has one [`DeliveryReply`] per request, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryBatch {
    pub requests: Vec<DeliveryRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryBatchReply {
    pub replies: Vec<DeliveryReply>,
}

/// What a batch-capable agent reads: one request or a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AgentRequest {
    Batch(DeliveryBatch),
    Single(DeliveryRequest),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Hello::new(DELIVERY_PROTOCOL, 1)).expect("write");
        let mut r = &buf[..];
        let h = Hello::expect(&mut r, DELIVERY_PROTOCOL, 1).expect("hello");
        assert!(!h.has(CAP_BATCH));
        let none: Option<Hello> = read_frame(&mut r).expect("eof");
        assert!(none.is_none());
    }

    #[test]
    fn refuses_huge_and_truncated_frames() {
        let mut big = (MAX_FRAME + 1).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        let r: io::Result<Option<Hello>> = read_frame(&mut &big[..]);
        assert!(r.is_err());
        let mut buf = Vec::new();
        write_frame(&mut buf, &Hello::new("x", 1)).expect("write");
        for cut in 1..buf.len() {
            let r: io::Result<Option<Hello>> = read_frame(&mut &buf[..cut]);
            assert!(r.is_err(), "prefix of {cut} bytes must not parse");
        }
    }

    #[test]
    fn version_mismatch_is_loud_and_unknown_fields_skipped() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Hello::new(DELIVERY_PROTOCOL, 2)).expect("write");
        assert!(Hello::expect(&mut &buf[..], DELIVERY_PROTOCOL, 1).is_err());
        let json = br#"{"results":[{"index":0,"outcome":"delivered","status":"2.0.0","text":"ok","future":1}]}"#;
        let mut f = (json.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(json);
        let r: DeliveryReply = read_frame(&mut &f[..]).expect("read").expect("frame");
        assert_eq!(r.results[0].outcome, Outcome::Delivered);
    }
}

/// The delivery protocol, agent side: sends the [`Hello`] (with [`CAP_BATCH`]), then for each
/// request or batch from qmgr calls `deliver(requests, received_at)` — which returns one
/// result list per request, in order, and does the agent's logging — and answers in the
/// shape asked (a [`DeliveryReply`] or a [`DeliveryBatchReply`]). Returns `Ok` when qmgr
/// closes the connection or the read times out (an idle connection), `Err` with a
/// message on a protocol or I/O error.
pub fn serve_deliveries<S, F>(stream: &mut S, mut deliver: F) -> Result<(), String>
where
    S: Read + Write,
    F: FnMut(&[DeliveryRequest], std::time::SystemTime) -> Vec<Vec<RcptResult>>,
{
    write_frame(
        stream,
        &Hello::new(DELIVERY_PROTOCOL, DELIVERY_VERSION).with_capability(CAP_BATCH),
    )
    .map_err(|e| format!("sending hello: {e}"))?;
    loop {
        let req: AgentRequest = match read_frame(stream) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(format!("bad delivery request: {e}; closing connection")),
        };
        let received = std::time::SystemTime::now();
        let (reqs, batched) = match req {
            AgentRequest::Single(r) => (vec![r], false),
            AgentRequest::Batch(b) => (b.requests, true),
        };
        let mut all = deliver(&reqs, received);
        // A result list per request, whatever the callback returned.
        all.resize_with(reqs.len(), Vec::new);
        let sent = if batched {
            write_frame(
                stream,
                &DeliveryBatchReply {
                    replies: all
                        .into_iter()
                        .map(|results| DeliveryReply { results })
                        .collect(),
                },
            )
        } else {
            let results = all.into_iter().next().unwrap_or_default();
            write_frame(stream, &DeliveryReply { results })
        };
        sent.map_err(|e| format!("sending reply: {e}"))?;
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn req(id: &str) -> DeliveryRequest {
        DeliveryRequest {
            queue_id: id.into(),
            path: String::new(),
            content_offset: 0,
            content_length: 0,
            sender: String::new(),
            transport: "t".into(),
            nexthop: String::new(),
            recipients: vec![RcptRef {
                index: 0,
                address: "a@b".into(),
                orcpt: None,
                notify: None,
            }],
            attributes: Vec::new(),
            arrival: 0,
        }
    }

    #[test]
    fn answers_singles_and_batches_in_their_shape() {
        let (mut agent, mut qmgr) = UnixStream::pair().expect("pair");
        let server = std::thread::spawn(move || {
            serve_deliveries(&mut agent, |reqs, _| {
                reqs.iter()
                    .map(|r| {
                        vec![RcptResult {
                            index: 0,
                            outcome: Outcome::Delivered,
                            status: "2.0.0".into(),
                            text: r.queue_id.clone(),
                            relay: String::new(),
                        }]
                    })
                    .collect()
            })
        });
        let h = Hello::expect(&mut qmgr, DELIVERY_PROTOCOL, DELIVERY_VERSION).expect("hello");
        assert!(h.has(CAP_BATCH));
        write_frame(&mut qmgr, &req("one")).expect("send");
        let r: DeliveryReply = read_frame(&mut qmgr).expect("read").expect("reply");
        assert_eq!(r.results[0].text, "one");
        let batch = DeliveryBatch {
            requests: vec![req("a"), req("b")],
        };
        write_frame(&mut qmgr, &batch).expect("send");
        let r: DeliveryBatchReply = read_frame(&mut qmgr).expect("read").expect("reply");
        let texts: Vec<&str> = r
            .replies
            .iter()
            .map(|x| x.results[0].text.as_str())
            .collect();
        assert_eq!(texts, ["a", "b"]);
        drop(qmgr);
        assert_eq!(server.join().expect("join"), Ok(()));
    }
}

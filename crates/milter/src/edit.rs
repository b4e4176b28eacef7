//! Applying end-of-message modifications to a message held as bytes (CRLF lines): header
//! additions, insertions, changes and deletions as Sendmail and Postfix interpret them, and
//! body replacement. Envelope changes (recipients, sender) are returned for the caller.

use crate::proto::Response;

/// One header as it stands in the message: name and the raw text after the colon
/// (continuation lines included, CRLF-separated, without the final CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Splits a message into its headers and its body (the bytes after the empty line).
pub fn split(message: &[u8]) -> (Vec<Header>, Vec<u8>) {
    let mut headers: Vec<Header> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..end];
        let text = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if text.is_empty() {
            return (headers, message[end..].to_vec());
        }
        let s = String::from_utf8_lossy(text).into_owned();
        if (text[0] == b' ' || text[0] == b'\t')
            && let Some(h) = headers.last_mut()
        {
            h.value.push_str("\r\n");
            h.value.push_str(&s);
        } else if let Some((n, v)) = s.split_once(':')
            && !n.is_empty()
            && !n.contains([' ', '\t'])
        {
            headers.push(Header {
                name: n.to_string(),
                value: v.to_string(),
            });
        } else {
            // Not a header: the body starts here (no empty line).
            return (headers, message[pos..].to_vec());
        }
        pos = end;
    }
    (headers, Vec::new())
}

/// A milter-supplied value as header text: LF line breaks become CRLF; a leading space is
/// added unless the value has its own leading white space (`SMFIP_HDR_LEADSPC`).
fn value_text(value: &str, leadspc: bool) -> String {
    // Continuation lines must start with white space, or they would end the header.
    let v = value
        .replace("\r\n", "\n")
        .split('\n')
        .enumerate()
        .map(|(i, l)| {
            if i > 0 && !l.starts_with([' ', '\t']) {
                format!(" {l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    if leadspc || v.starts_with([' ', '\t']) {
        v
    } else {
        format!(" {v}")
    }
}

/// Applies the header and body modifications of `mods` to `message`; returns the new
/// message. `leadspc`: the milter negotiated `SMFIP_HDR_LEADSPC`.
pub fn apply_headers_body(message: &[u8], mods: &[Response], leadspc: bool) -> Vec<u8> {
    let (mut headers, mut body) = split(message);
    let mut new_body: Option<Vec<u8>> = None;
    for m in mods {
        match m {
            Response::AddHeader { name, value } => headers.push(Header {
                name: name.clone(),
                value: value_text(value, leadspc),
            }),
            Response::InsertHeader { index, name, value } => {
                let at = usize::try_from(*index)
                    .unwrap_or(usize::MAX)
                    .min(headers.len());
                headers.insert(
                    at,
                    Header {
                        name: name.clone(),
                        value: value_text(value, leadspc),
                    },
                );
            }
            Response::ChangeHeader { index, name, value } => {
                let nth = usize::try_from((*index).max(1)).unwrap_or(usize::MAX);
                let found = headers
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.name.eq_ignore_ascii_case(name))
                    .nth(nth - 1)
                    .map(|(i, _)| i);
                match (found, value.is_empty()) {
                    (Some(i), true) => {
                        headers.remove(i);
                    }
                    (Some(i), false) => headers[i].value = value_text(value, leadspc),
                    (None, false) => headers.push(Header {
                        name: name.clone(),
                        value: value_text(value, leadspc),
                    }),
                    (None, true) => {}
                }
            }
            Response::ReplaceBody(chunk) => {
                new_body
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(chunk);
            }
            _ => {}
        }
    }
    if let Some(b) = new_body {
        body = b;
    }
    let mut out = Vec::with_capacity(message.len() + 256);
    for h in &headers {
        out.extend_from_slice(h.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// The envelope changes of an accepting verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvelopeChanges {
    pub add: Vec<String>,
    pub delete: Vec<String>,
    pub sender: Option<String>,
}

fn bare(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// Applies the header and body modifications to `message` and collects envelope changes.
pub fn apply(mods: &[(Response, bool)], message: &[u8]) -> (Vec<u8>, EnvelopeChanges) {
    let mut out = message.to_vec();
    let mut env = EnvelopeChanges::default();
    // Consecutive modifications with the same header convention are applied together.
    let mut content: Vec<(Response, bool)> = Vec::new();
    for (m, lead) in mods {
        match m {
            Response::AddRcpt { rcpt, .. } => env.add.push(bare(rcpt)),
            Response::DelRcpt(r) => env.delete.push(bare(r)),
            Response::ChangeFrom { from, .. } => env.sender = Some(bare(from)),
            other => content.push((other.clone(), *lead)),
        }
    }
    if !content.is_empty() {
        for chunk in content.chunk_by(|a, b| a.1 == b.1) {
            let list: Vec<Response> = chunk.iter().map(|(r, _)| r.clone()).collect();
            out = apply_headers_body(&out, &list, chunk[0].1);
        }
    }
    (out, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nSubject: hi\r\nX-Spam: yes\r\nX-Spam: again\r\n\r\nbody\r\n";

    #[test]
    fn splits_folded_headers() {
        let (h, b) = split(MSG);
        assert_eq!(h.len(), 4);
        assert_eq!(h[0].value, " from x\r\n\tby y");
        assert_eq!(b, b"body\r\n");
    }

    #[test]
    fn applies_header_and_body_changes() {
        let mods = vec![
            Response::AddHeader {
                name: "X-Added".into(),
                value: "one\ntwo".into(),
            },
            Response::InsertHeader {
                index: 0,
                name: "X-First".into(),
                value: "top".into(),
            },
            Response::ChangeHeader {
                index: 1,
                name: "subject".into(),
                value: "changed".into(),
            },
            Response::ChangeHeader {
                index: 2,
                name: "X-Spam".into(),
                value: String::new(),
            },
            Response::ReplaceBody(b"new ".to_vec()),
            Response::ReplaceBody(b"body\r\n".to_vec()),
        ];
        let out = String::from_utf8(apply_headers_body(MSG, &mods, false)).expect("utf8");
        assert_eq!(
            out,
            "X-First: top\r\nReceived: from x\r\n\tby y\r\nSubject: changed\r\nX-Spam: yes\r\nX-Added: one\r\n two\r\n\r\nnew body\r\n"
        );
    }

    #[test]
    fn modifications_split_into_content_and_envelope() {
        let mods = vec![
            (
                Response::AddHeader {
                    name: "X-A".into(),
                    value: "1".into(),
                },
                false,
            ),
            (
                Response::AddRcpt {
                    rcpt: "<new@x>".into(),
                    args: None,
                },
                false,
            ),
            (Response::DelRcpt("<old@x>".into()), false),
            (
                Response::ChangeFrom {
                    from: "<s@x>".into(),
                    args: None,
                },
                false,
            ),
        ];
        let (msg, env) = apply(&mods, b"Subject: s\r\n\r\nb\r\n");
        assert_eq!(msg, b"Subject: s\r\nX-A: 1\r\n\r\nb\r\n");
        assert_eq!(
            env,
            EnvelopeChanges {
                add: vec!["new@x".into()],
                delete: vec!["old@x".into()],
                sender: Some("s@x".into()),
            }
        );
    }
}

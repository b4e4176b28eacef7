//! Small header helpers a delivery agent needs around a mailbox write: `Delivered-To:` loop
//! detection (local(8)'s "mail forwarding loop for X") and RFC 822 local-part quoting for the
//! `From ` line, `Return-Path:` and `Delivered-To:`.

/// Counts the `Delivered-To:` header lines in the message header block `header` whose value
/// equals `recipient`, ignoring case and surrounding white space, as Postfix's
/// `delivered_hdr` does. Reading stops at the first empty line (the end of the header);
/// folded headers and CRLF or LF line ends are handled. A delivery agent bounces with
/// "mail forwarding loop for <recipient>" when this is not zero.
pub fn count_delivered_to(header: &[u8], recipient: &str) -> usize {
    let want = recipient.trim().as_bytes();
    let mut count = 0;
    for field in header_fields(header) {
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&field[..colon], &field[colon + 1..]);
        if !trim(name).eq_ignore_ascii_case(b"Delivered-To") {
            continue;
        }
        if trim(value).eq_ignore_ascii_case(want) {
            count += 1;
        }
    }
    count
}

/// Header fields of a header block, continuation lines joined (line ends dropped).
fn header_fields(header: &[u8]) -> Vec<Vec<u8>> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ') | Some(b'\t'))
            && let Some(last) = fields.last_mut()
        {
            last.extend_from_slice(line);
            continue;
        }
        fields.push(line.to_vec());
    }
    fields
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// The `Return-Path:` line Postfix prepends: `Return-Path: <sender>`, `<>` for the null
/// sender. Postfix writes, in this order, `Return-Path:`, `X-Original-To:`, `Delivered-To:`.
pub fn return_path_header(sender: &str) -> String {
    if sender.is_empty() {
        "Return-Path: <>".to_string()
    } else {
        format!("Return-Path: <{}>", quote_822_local(sender))
    }
}

/// The `X-Original-To:` line (the original envelope recipient), or `None` when it is empty
/// (original recipient recording disabled), as Postfix.
pub fn original_to_header(orig_rcpt: &str) -> Option<String> {
    (!orig_rcpt.is_empty()).then(|| format!("X-Original-To: {}", quote_822_local(orig_rcpt)))
}

/// The `Delivered-To:` line for the final recipient, which [`count_delivered_to`] finds again
/// if the message comes back.
pub fn delivered_to_header(recipient: &str) -> String {
    format!("Delivered-To: {}", quote_822_local(recipient))
}

/// Quotes the local part of `addr` (before the last `@`) with double quotes when it contains
/// characters that RFC 822 does not allow in an unquoted local part (specials, space,
/// controls, or misplaced dots), as Postfix's `quote_822_local()`. `a b@c` becomes `"a b"@c`.
pub fn quote_822_local(addr: &str) -> String {
    let (local, domain) = match addr.rfind('@') {
        Some(at) => (&addr[..at], Some(&addr[at + 1..])),
        None => (addr, None),
    };
    if !needs_quote(local) {
        return addr.to_string();
    }
    let mut out = String::with_capacity(addr.len() + 4);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' || c == '\r' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    if let Some(domain) = domain {
        out.push('@');
        out.push_str(domain);
    }
    out
}

fn needs_quote(local: &str) -> bool {
    if local.is_empty() {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return true;
    }
    local.chars().any(|c| {
        c.is_ascii_control()
            || c == ' '
            || matches!(
                c,
                '(' | ')' | '<' | '>' | '@' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_matching_delivered_to() {
        let h = b"Received: x\r\nDelivered-To: Joe@Example.COM\r\ndelivered-to:  joe@example.com \r\n\
Delivered-To: other@example.com\r\nDelivered-To:\r\n joe@example.com\r\n\r\nDelivered-To: joe@example.com\r\n";
        assert_eq!(count_delivered_to(h, "joe@example.com"), 3);
        assert_eq!(count_delivered_to(h, "nobody@example.com"), 0);
    }

    #[test]
    fn postfix_header_lines() {
        assert_eq!(return_path_header(""), "Return-Path: <>");
        assert_eq!(return_path_header("a b@c"), "Return-Path: <\"a b\"@c>");
        assert_eq!(original_to_header(""), None);
        assert_eq!(
            original_to_header("x@y").as_deref(),
            Some("X-Original-To: x@y")
        );
        let d = delivered_to_header("joe@example.com");
        assert_eq!(
            count_delivered_to(format!("{d}\n\n").as_bytes(), "joe@example.com"),
            1
        );
    }

    #[test]
    fn quotes_local_parts() {
        assert_eq!(quote_822_local("a@b"), "a@b");
        assert_eq!(quote_822_local("a b@c"), "\"a b\"@c");
        assert_eq!(quote_822_local("a\"b@c"), "\"a\\\"b\"@c");
        assert_eq!(quote_822_local(".x@c"), "\".x\"@c");
        assert_eq!(quote_822_local("x@y@c"), "\"x@y\"@c");
    }
}

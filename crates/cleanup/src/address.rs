//! Address pieces: RFC 5322 local-part quoting (as Postfix's `quote_822_local` and
//! `unquote_822_local`) and finding the addresses in an address-list header
//! (`From:`, `To:`, ...) so that rewriting can replace each one in place and leave the rest
//! of the header (display names, comments, folding) as written.

use std::ops::Range;

/// Characters that force a local part into quotes.
fn needs_quotes(local: &str) -> bool {
    local.is_empty()
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || local
            .chars()
            .any(|c| c.is_ascii_control() || " \t\"(),:;<>@[\\]".contains(c))
}

/// `local@domain` with the local part quoted when it needs it (external form).
pub fn quote_address(address: &str) -> String {
    let (local, domain) = match address.rfind('@') {
        Some(i) => (&address[..i], Some(&address[i + 1..])),
        None => (address, None),
    };
    let mut out = if needs_quotes(local) && !local.is_empty() {
        let mut q = String::from("\"");
        for c in local.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    } else {
        local.to_string()
    };
    if let Some(d) = domain {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// Removes the quotes of a quoted local part (`"a b"@c` is `a b@c`; internal form).
pub fn unquote_address(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    let mut in_quotes = false;
    let mut escaped = false;
    for c in address.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else {
            out.push(c);
        }
    }
    out
}

/// The byte ranges of the addresses in an address-list header value: the inside of each
/// `<...>`, or a bare `local@domain` token. Groups (`name: a, b;`) and comments are
/// understood; an element that is not a plain address (a comment in the middle of it, an
/// empty group) yields nothing, so it is left alone.
pub fn address_ranges(value: &str) -> Vec<Range<usize>> {
    let b = value.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut depth = 0usize; // comment nesting
    let mut quoted = false;
    let mut angle: Option<usize> = None;
    let mut last_angle: Option<Range<usize>> = None;
    let mut elem_has_comment = false;
    let finish = |s: usize,
                  e: usize,
                  last_angle: &mut Option<Range<usize>>,
                  comment: bool,
                  out: &mut Vec<Range<usize>>| {
        if let Some(r) = last_angle.take() {
            if r.end > r.start {
                out.push(r);
            }
            return;
        }
        if let Some(r) = bare_token(value, s, e, comment) {
            out.push(r);
        }
    };
    while i < b.len() {
        let c = b[i];
        if quoted {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                quoted = false;
            }
        } else if depth > 0 {
            if c == b'\\' {
                i += 1;
            } else if c == b'(' {
                depth += 1;
            } else if c == b')' {
                depth -= 1;
            }
        } else {
            match c {
                b'"' => quoted = true,
                b'(' => {
                    depth = 1;
                    elem_has_comment = true;
                }
                b'<' => angle = Some(i + 1),
                b'>' => {
                    if let Some(s) = angle.take() {
                        last_angle = Some(s..i);
                    }
                }
                b',' | b';' if angle.is_none() => {
                    finish(start, i, &mut last_angle, elem_has_comment, &mut out);
                    start = i + 1;
                    elem_has_comment = false;
                }
                b':' if angle.is_none() && last_angle.is_none() => {
                    // A group name: the list starts after it.
                    start = i + 1;
                    elem_has_comment = false;
                }
                _ => {}
            }
        }
        i += 1;
    }
    finish(start, b.len(), &mut last_angle, elem_has_comment, &mut out);
    out
}

/// A bare address in `value[s..e]`: the only token besides white space and comments.
fn bare_token(value: &str, s: usize, e: usize, has_comment: bool) -> Option<Range<usize>> {
    let seg = &value[s..e];
    // The token ends where white space or a comment starts.
    let lead = seg.len() - seg.trim_start().len();
    let t0 = s + lead;
    let rest = &value[t0..e];
    let mut end = t0;
    let mut quoted = false;
    for (k, c) in rest.char_indices() {
        if quoted {
            if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c.is_whitespace() || c == '(' {
            break;
        }
        end = t0 + k + c.len_utf8();
    }
    if end == t0 {
        return None;
    }
    // Only white space and comments may follow.
    let tail = &value[end..e];
    let tail_ok = tail.trim().is_empty() || (has_comment && only_comments(tail));
    let token = &value[t0..end];
    (tail_ok && !token.contains('<')).then_some(t0..end)
}

/// True when `s` is nothing but white space and (nested) comments.
fn only_comments(s: &str) -> bool {
    let mut depth = 0usize;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if depth > 0 && c == '\\' {
            escaped = true;
        } else if c == '(' {
            depth += 1;
        } else if c == ')' && depth > 0 {
            depth -= 1;
        } else if depth == 0 && !c.is_whitespace() {
            return false;
        }
    }
    true
}

/// Replaces every address of an address-list header value for which `f` returns a new
/// one (external forms); `None` when nothing changed.
pub fn rewrite_address_list<E>(
    value: &str,
    mut f: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<Option<String>, E> {
    let mut out = String::with_capacity(value.len());
    let mut pos = 0;
    let mut changed = false;
    for r in address_ranges(value) {
        let old = &value[r.clone()];
        if old.trim().is_empty() {
            continue;
        }
        if let Some(new) = f(old.trim())?
            && new != old.trim()
        {
            out.push_str(&value[pos..r.start]);
            out.push_str(&new);
            pos = r.end;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    out.push_str(&value[pos..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &str) -> Vec<&str> {
        address_ranges(v).into_iter().map(|r| &v[r]).collect()
    }

    #[test]
    fn finds_addresses() {
        assert_eq!(addrs(" a@b.c"), vec!["a@b.c"]);
        assert_eq!(
            addrs(" \"Doe, John\" <j@x.y>, b@c (Bee), <z@q>"),
            vec!["j@x.y", "b@c", "z@q"]
        );
        assert_eq!(addrs(" team: a@b, c@d;, e@f"), vec!["a@b", "c@d", "e@f"]);
        assert_eq!(addrs(" undisclosed-recipients:;"), Vec::<&str>::new());
        assert_eq!(addrs(" a@b (x) c@d"), Vec::<&str>::new());
        assert_eq!(addrs(" Name\r\n\t<a@b>"), vec!["a@b"]);
    }

    #[test]
    fn rewrites_in_place() {
        let r = rewrite_address_list::<()>(" Joe <joe@host.example>, x@y", |a| {
            Ok((a == "joe@host.example").then(|| "joe@example".to_string()))
        });
        assert_eq!(r, Ok(Some(" Joe <joe@example>, x@y".to_string())));
        let none = rewrite_address_list::<()>(" x@y", |_| Ok(None));
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_address("a b@c"), "\"a b\"@c");
        assert_eq!(quote_address("ab@c"), "ab@c");
        assert_eq!(unquote_address("\"a b\"@c"), "a b@c");
        assert_eq!(unquote_address("\"a\\\"b\"@c"), "a\"b@c");
    }
}

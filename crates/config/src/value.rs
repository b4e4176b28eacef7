//! Typed values: booleans, integers, times and sizes as Postfix writes them, and list
//! splitting (white space and/or commas, with `{ }` grouping).

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub name: String,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad {} value for parameter \"{}\": \"{}\"",
            self.expected, self.name, self.value
        )
    }
}

impl std::error::Error for ValueError {}

fn err(name: &str, value: &str, expected: &'static str) -> ValueError {
    ValueError {
        name: name.to_string(),
        value: value.to_string(),
        expected,
    }
}

/// `yes`/`no`, case-insensitive, as Postfix's get_mail_conf_bool.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, ValueError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(err(name, value, "boolean"))
    }
}

pub fn parse_int(name: &str, value: &str) -> Result<i64, ValueError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| err(name, value, "integer"))
}

/// A size in bytes: a non-negative decimal integer.
pub fn parse_size(name: &str, value: &str) -> Result<u64, ValueError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| err(name, value, "size"))
}

/// A time: a number with an optional unit `s m h d w`; a bare number is in `default_unit`.
pub fn parse_time(name: &str, value: &str, default_unit: char) -> Result<Duration, ValueError> {
    let v = value.trim();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_lowercase()),
        _ => (v, default_unit),
    };
    let n: u64 = digits.parse().map_err(|_| err(name, value, "time"))?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86400),
        'w' => n.checked_mul(7 * 86400),
        _ => None,
    }
    .ok_or_else(|| err(name, value, "time"))?;
    Ok(Duration::from_secs(secs))
}

/// Splits a list on white space and commas; `{ ... }` groups stay one element (with their
/// braces, so that callers that give them meaning can see them).
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if depth == 0 && (c.is_whitespace() || c == ',') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Strips one level of `{ }` from a grouped list element, trimming the inside.
pub fn ungroup(s: &str) -> &str {
    match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner.trim(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(split_list("a, b,c  d,,\te"), vec!["a", "b", "c", "d", "e"]);
        assert_eq!(split_list("  "), Vec::<String>::new());
        assert_eq!(
            split_list("check_policy, { inline:{a=b, c=d} }, x"),
            vec!["check_policy", "{ inline:{a=b, c=d} }", "x"]
        );
        assert_eq!(ungroup("{ a b }"), "a b");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("t", "300s", 's'), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("t", "5m", 's'), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("t", "2", 'h'), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_time("t", "1w", 's'), Ok(Duration::from_secs(604800)));
        assert!(parse_time("t", "5x", 's').is_err());
        assert!(parse_time("t", "", 's').is_err());
        assert!(parse_time("t", "s", 's').is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(parse_bool("b", "YES"), Ok(true));
        assert_eq!(parse_bool("b", "no"), Ok(false));
        assert!(parse_bool("b", "maybe").is_err());
        assert_eq!(parse_size("s", "10240000"), Ok(10240000));
        assert!(parse_size("s", "-1").is_err());
        assert_eq!(parse_int("i", " 42 "), Ok(42));
    }
}

//! `$name` expansion with Postfix's rules (postconf(5), "Parameter expansion").
//!
//! Forms: `$name`, `${name}`, `$(name)`, `${name?value}`, `${name:value}`, `${name?{value}}`,
//! `${name:{value}}`, `${name?{value1}:{value2}}`, `$$`, and Postfix 3.6's relational form
//! `${{text1} op {text2} ? {value1} : {value2}}` (used by compatibility-level defaults).
//! Expansion is recursive; nesting deeper than [`MAX_DEPTH`] is reported as a loop instead
//! of being followed, so a cycle can never overflow the stack.

use std::fmt;

/// Postfix gives up at the same depth ("unreasonable macro call nesting").
pub const MAX_DEPTH: usize = 100;

/// The result of expanding one value, with the names it referenced but found undefined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub value: String,
    pub undefined: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// A reference cycle (or absurd nesting) through the named parameter.
    Loop(String),
    /// `$` followed by something that is not a name, `{`, `(` or `$`.
    EmptyName(String),
    /// `${` or `$(` without its closing bracket.
    Unmatched(String),
    /// Anything else malformed inside `${...}`.
    Syntax(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Loop(n) => write!(f, "unreasonable macro call nesting: \"{n}\""),
            ExpandError::EmptyName(t) => write!(f, "empty macro name: \"{t}\""),
            ExpandError::Unmatched(t) => write!(f, "unmatched bracket in: \"{t}\""),
            ExpandError::Syntax(t) => write!(f, "macro syntax error: {t}"),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Expands `text`, asking `lookup` for the raw (unexpanded) value of each referenced name.
pub fn expand<F>(text: &str, lookup: &F) -> Result<Expansion, ExpandError>
where
    F: Fn(&str) -> Option<String>,
{
    let mut ex = Expander {
        lookup,
        undefined: Vec::new(),
    };
    let value = ex.expand(text, 0, None)?;
    Ok(Expansion {
        value,
        undefined: ex.undefined,
    })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Finds the index of the bracket closing the one at `open` (same bracket kind nests).
fn matching(s: &str, open: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let (o, c) = match bytes.get(open) {
        Some(b'{') => (b'{', b'}'),
        Some(b'(') => (b'(', b')'),
        _ => return None,
    };
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if b == o {
            depth += 1;
        } else if b == c {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// Splits `{inner}rest` (after leading white space) into `(inner, rest)`.
fn braced(s: &str) -> Option<(&str, &str)> {
    let t = s.trim_start();
    if !t.starts_with('{') {
        return None;
    }
    let end = matching(t, 0)?;
    Some((&t[1..end], &t[end + 1..]))
}

struct Expander<'a, F> {
    lookup: &'a F,
    undefined: Vec<String>,
}

impl<F> Expander<'_, F>
where
    F: Fn(&str) -> Option<String>,
{
    fn expand(
        &mut self,
        text: &str,
        depth: usize,
        within: Option<&str>,
    ) -> Result<String, ExpandError> {
        if depth > MAX_DEPTH {
            return Err(ExpandError::Loop(within.unwrap_or(text).to_string()));
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < bytes.len() {
            let Some(off) = text[i..].find('$') else {
                out.push_str(&text[i..]);
                break;
            };
            out.push_str(&text[i..i + off]);
            let d = i + off;
            match bytes.get(d + 1) {
                Some(b'$') => {
                    out.push('$');
                    i = d + 2;
                }
                Some(b'{') | Some(b'(') => {
                    let close = matching(text, d + 1)
                        .ok_or_else(|| ExpandError::Unmatched(text[d..].to_string()))?;
                    let inner = &text[d + 2..close];
                    let curly = bytes[d + 1] == b'{';
                    if curly && inner.trim_start().starts_with('{') {
                        out.push_str(&self.relational(inner, depth)?);
                    } else {
                        out.push_str(&self.reference(inner, depth)?);
                    }
                    i = close + 1;
                }
                Some(&b) if is_name_byte(b) => {
                    let end = bytes[d + 1..]
                        .iter()
                        .position(|&b| !is_name_byte(b))
                        .map_or(bytes.len(), |p| d + 1 + p);
                    out.push_str(&self.value_of(&text[d + 1..end], depth)?);
                    i = end;
                }
                _ => return Err(ExpandError::EmptyName(text[d..].to_string())),
            }
        }
        Ok(out)
    }

    /// The expanded value of a parameter; undefined names expand to nothing and are noted.
    fn value_of(&mut self, name: &str, depth: usize) -> Result<String, ExpandError> {
        match (self.lookup)(name) {
            Some(raw) => self.expand(&raw, depth + 1, Some(name)),
            None => {
                self.undefined.push(name.to_string());
                Ok(String::new())
            }
        }
    }

    /// `name`, `name?value`, `name:value` and their `{value}` forms.
    fn reference(&mut self, inner_raw: &str, depth: usize) -> Result<String, ExpandError> {
        // Postfix allows white space around the name: `${ name }`, `${name ? value}`.
        let inner = inner_raw.trim_start();
        let bytes = inner.as_bytes();
        let name_end = bytes
            .iter()
            .position(|&b| !is_name_byte(b))
            .unwrap_or(bytes.len());
        let name = &inner[..name_end];
        if name.is_empty() {
            return Err(ExpandError::EmptyName(format!("${{{inner}}}")));
        }
        let rest = inner[name_end..].trim_start();
        let op = match rest.as_bytes().first() {
            None => return self.value_of(name, depth),
            Some(b'?') => '?',
            Some(b':') => ':',
            Some(_) => {
                return Err(ExpandError::Syntax(format!(
                    "unexpected text after parameter name in \"${{{inner}}}\""
                )));
            }
        };
        let arg = &rest[1..];
        let (when_set, when_empty) = match braced(arg) {
            Some((v1, after)) => {
                let after = after.trim();
                if after.is_empty() {
                    if op == '?' {
                        (Some(v1), None)
                    } else {
                        (None, Some(v1))
                    }
                } else if op == '?' && after.starts_with(':') {
                    match braced(&after[1..]) {
                        Some((v2, tail)) if tail.trim().is_empty() => (Some(v1), Some(v2)),
                        _ => {
                            return Err(ExpandError::Syntax(format!(
                                "expected {{value}} after ':' in \"${{{inner}}}\""
                            )));
                        }
                    }
                } else {
                    return Err(ExpandError::Syntax(format!(
                        "unexpected text after '}}' in \"${{{inner}}}\""
                    )));
                }
            }
            None if op == '?' => (Some(arg), None),
            None => (None, Some(arg)),
        };
        let set = match (self.lookup)(name) {
            Some(raw) => !raw.is_empty(),
            None => {
                self.undefined.push(name.to_string());
                false
            }
        };
        let chosen = if set { when_set } else { when_empty };
        match chosen {
            Some(v) => self.expand(v, depth + 1, Some(name)),
            None => Ok(String::new()),
        }
    }

    /// `{text1} op {text2} ? {value1} : {value2}` (Postfix 3.6 and later).
    fn relational(&mut self, inner: &str, depth: usize) -> Result<String, ExpandError> {
        let bad = || ExpandError::Syntax(format!("bad relational expression \"${{{inner}}}\""));
        let (t1, rest) = braced(inner).ok_or_else(bad)?;
        let rest = rest.trim_start();
        let op_len = rest
            .as_bytes()
            .iter()
            .position(|&b| b.is_ascii_whitespace() || b == b'{')
            .unwrap_or(rest.len());
        let op = &rest[..op_len];
        let (t2, rest) = braced(&rest[op_len..]).ok_or_else(bad)?;
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('?').ok_or_else(bad)?;
        let (v1, rest) = braced(rest).ok_or_else(bad)?;
        let rest = rest.trim();
        let v2 = if rest.is_empty() {
            None
        } else {
            let r = rest.strip_prefix(':').ok_or_else(bad)?;
            let (v2, tail) = braced(r).ok_or_else(bad)?;
            if !tail.trim().is_empty() {
                return Err(bad());
            }
            Some(v2)
        };
        let a = self.expand(t1, depth + 1, None)?;
        let b = self.expand(t2, depth + 1, None)?;
        let truth = compare(op, a.trim(), b.trim()).ok_or_else(bad)?;
        match if truth { Some(v1) } else { v2 } {
            Some(v) => self.expand(v, depth + 1, None),
            None => Ok(String::new()),
        }
    }
}

/// Evaluates a relational operator; `None` for an unknown operator or non-numeric operands.
fn compare(op: &str, a: &str, b: &str) -> Option<bool> {
    use std::cmp::Ordering;
    let (base, ord) = if let Some(base) = op.strip_suffix("level") {
        (base, level(a)?.cmp(&level(b)?))
    } else if op == "==" || op == "!=" {
        (
            op,
            if a == b {
                Ordering::Equal
            } else {
                Ordering::Less
            },
        )
    } else {
        (op, a.parse::<i64>().ok()?.cmp(&b.parse::<i64>().ok()?))
    };
    Some(match base {
        "==" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        ">=" => ord != Ordering::Less,
        _ => return None,
    })
}

/// A compatibility level `major[.minor[.patch]]` as a comparable triple.
pub fn level(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(text: &str, vars: &[(&str, &str)]) -> Result<Expansion, ExpandError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        expand(text, &|n: &str| map.get(n).cloned())
    }

    fn ok(text: &str, vars: &[(&str, &str)]) -> String {
        run(text, vars).expect("expands").value
    }

    #[test]
    fn plain_forms() {
        let v = [("a", "A"), ("b", "B")];
        assert_eq!(ok("$a ${b} $(a)", &v), "A B A");
        assert_eq!(ok("x$a.y", &v), "xA.y");
        assert_eq!(ok("$$a", &v), "$a");
        assert_eq!(ok("no dollars", &v), "no dollars");
    }

    #[test]
    fn conditionals() {
        let v = [("set", "1"), ("empty", "")];
        assert_eq!(ok("${set?yes}", &v), "yes");
        assert_eq!(ok("${empty?yes}", &v), "");
        assert_eq!(ok("${set:no}", &v), "");
        assert_eq!(ok("${empty:no}", &v), "no");
        assert_eq!(ok("${set?{ yes }}", &v), " yes ");
        assert_eq!(ok("${empty:{fallback}}", &v), "fallback");
        assert_eq!(ok("${set?{a}:{b}}", &v), "a");
        assert_eq!(ok("${empty?{a}:{b}}", &v), "b");
        assert_eq!(ok("${set?$set and $set}", &v), "1 and 1");
    }

    #[test]
    fn white_space_inside_references() {
        let v = [("h", "H")];
        assert_eq!(
            ok("${ h }|$( h )|${h ? set}|${u : unset }", &v),
            "H|H| set| unset "
        );
        assert_eq!(super::references("${ h } $( u )"), vec!["h", "u"]);
    }

    #[test]
    fn undefined_is_empty_and_reported() {
        let e = run("a $nope ${gone?x} ${gone2:y}", &[]).expect("expands");
        assert_eq!(e.value, "a   y");
        assert_eq!(e.undefined, vec!["nope", "gone", "gone2"]);
    }

    #[test]
    fn recursive_and_nested() {
        let v = [
            ("a", "$b-$b"),
            ("b", "${c}"),
            ("c", "C"),
            ("n", "${a?{[$a]}}"),
        ];
        assert_eq!(ok("$a", &v), "C-C");
        assert_eq!(ok("$n", &v), "[C-C]");
    }

    #[test]
    fn loops_are_errors_not_overflows() {
        assert!(matches!(
            run("$a", &[("a", "$b"), ("b", "$a")]),
            Err(ExpandError::Loop(_))
        ));
        assert!(matches!(
            run("$a", &[("a", "x$a")]),
            Err(ExpandError::Loop(_))
        ));
        assert!(matches!(
            run("${a?$a}", &[("a", "${a?$a}")]),
            Err(ExpandError::Loop(_))
        ));
    }

    #[test]
    fn malformed() {
        assert!(matches!(run("$", &[]), Err(ExpandError::EmptyName(_))));
        assert!(matches!(run("a$-b", &[]), Err(ExpandError::EmptyName(_))));
        assert!(matches!(run("${abc", &[]), Err(ExpandError::Unmatched(_))));
        assert!(matches!(run("${a!x}", &[]), Err(ExpandError::Syntax(_))));
    }

    #[test]
    fn relational_and_levels() {
        let v = [("compatibility_level", "3.6"), ("d", "D")];
        assert_eq!(
            ok("${{$compatibility_level} <level {2} ? {old} : {new}}", &v),
            "new"
        );
        assert_eq!(
            ok("${{$compatibility_level} <level {3.7} ? {old} : {new}}", &v),
            "old"
        );
        assert_eq!(ok("${{1} < {2} ? {$d}}", &v), "D");
        assert_eq!(ok("${{a} == {a} ? {eq} : {ne}}", &v), "eq");
        assert_eq!(ok("${{a} != {a} ? {eq} : {ne}}", &v), "ne");
        assert!(run("${{a} < {b} ? {x}}", &v).is_err());
        assert_eq!(level("3.6"), Some((3, 6, 0)));
        assert_eq!(level("0"), Some((0, 0, 0)));
        assert_eq!(level("x"), None);
    }
}

/// The parameter names that `text` refers to, without expanding anything (malformed
/// references are passed over: this serves "is this parameter used?" questions).
pub fn references(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let start = match bytes.get(i + 1) {
            Some(b'$') => {
                i += 2;
                continue;
            }
            Some(b'{') | Some(b'(') => {
                let mut j = i + 2;
                while bytes.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
                    j += 1;
                }
                j
            }
            _ => i + 1,
        };
        let len = bytes[start..]
            .iter()
            .take_while(|&&b| is_name_byte(b))
            .count();
        if len > 0 {
            let name = text[start..start + len].to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        i = start + len;
    }
    out
}

#[cfg(test)]
mod reference_tests {
    use super::references;

    #[test]
    fn finds_all_forms() {
        assert_eq!(
            references("$a ${b?$c} $(d) $$e ${{$f} < {1} ? {x}}"),
            vec!["a", "b", "c", "d", "f"]
        );
    }
}

//! `regexp:` (regexp_table(5)) and `pcre:` (pcre_table(5)) tables.
//!
//! Rules are tried in file order; the first match wins:
//!
//! ```text
//! /pattern/flags result          the result, with $1..$9, ${1}, $(1) substituted
//! !/pattern/flags result         matches when the pattern does not ($n not allowed)
//! /pat1/!/pat2/ result           regexp: only: pat1 matches and pat2 does not
//! if /pattern/flags ... endif    the rules inside apply only when the pattern matches
//! if !/pattern/flags ... endif   ... only when it does not; ifs nest
//! ```
//!
//! The delimiter is any character after the optional `!`s; a backslash escapes it.
//! Flags toggle: `i` case-insensitive (on by default), `m` multi-line, and for pcre
//! `s` (dot matches newline, on by default), `x` extended, `U` ungreedy, `A` anchored;
//! `E` and `X` are accepted (Rust's `$` already matches only at the very end).
//! `$$` is a literal `$`. A bad rule is skipped with a warning (Postfix's wording,
//! `regexp map FILE, line N: ...`), and the rest of the table stays in force.
//!
//! # Engines and what differs from Postfix
//!
//! Both types use the `regex` crate (linear time, no catastrophic backtracking); a
//! `pcre:` pattern that needs look-around, back-references or atomic groups is compiled
//! with `fancy-regex` instead. POSIX patterns are translated: backslashes inside brackets
//! are literal as in POSIX, `\<`/`\>` become `\b`, a `{` that starts no interval is
//! literal, and without `m` the dot matches a newline (POSIX `REG_NEWLINE` off). Not
//! supported: basic regular expressions (turning `x` off in `regexp:`), POSIX's
//! leftmost-longest choice between alternatives (Rust picks the leftmost-first, which can
//! change what `$n` captures, not whether a rule matches), collating elements `[[.x.]]`
//! and `[[=x=]]`, PCRE callouts, `\C`, and recursion `(?R)`; error texts for broken
//! patterns are Rust's, not glibc's or PCRE's.

use crate::text::LogicalLines;
use crate::{Map, MapError, MatchKind};
use std::io::BufReader;

/// POSIX extended regular expressions or PCRE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Posix,
    Pcre,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Posix => "regexp",
            Dialect::Pcre => "pcre",
        }
    }
}

/// A compiled pattern.
pub(crate) enum Engine {
    Plain(regex::Regex),
    Fancy(Box<fancy_regex::Regex>),
}

impl Engine {
    fn groups(&self) -> usize {
        match self {
            Engine::Plain(r) => r.captures_len() - 1,
            Engine::Fancy(r) => r.captures_len() - 1,
        }
    }

    /// Whether the pattern matches; with `caps`, also the capture groups' text.
    fn matches(&self, text: &str, caps: Option<&mut Vec<String>>) -> Result<bool, String> {
        match (self, caps) {
            (Engine::Plain(r), None) => Ok(r.is_match(text)),
            (Engine::Plain(r), Some(out)) => Ok(match r.captures(text) {
                None => false,
                Some(c) => {
                    out.clear();
                    out.extend(
                        c.iter()
                            .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()),
                    );
                    true
                }
            }),
            (Engine::Fancy(r), None) => r.is_match(text).map_err(|e| e.to_string()),
            (Engine::Fancy(r), Some(out)) => match r.captures(text) {
                Err(e) => Err(e.to_string()),
                Ok(None) => Ok(false),
                Ok(Some(c)) => {
                    out.clear();
                    out.extend(
                        c.iter()
                            .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()),
                    );
                    Ok(true)
                }
            },
        }
    }
}

/// Translates a POSIX ERE to Rust regex syntax (see the module documentation).
fn posix_to_rust(p: &str) -> String {
    let c: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' if i + 1 < c.len() => {
                let n = c[i + 1];
                match n {
                    '<' | '>' => out.push_str("\\b"),
                    'w' | 'W' | 's' | 'S' | 'b' | 'B' => {
                        out.push('\\');
                        out.push(n);
                    }
                    n if n.is_ascii_alphanumeric() => push_literal(&mut out, n),
                    n => push_literal(&mut out, n),
                }
                i += 2;
            }
            '[' => {
                out.push('[');
                i += 1;
                if i < c.len() && c[i] == '^' {
                    out.push('^');
                    i += 1;
                }
                if i < c.len() && c[i] == ']' {
                    out.push_str("\\]");
                    i += 1;
                }
                while i < c.len() && c[i] != ']' {
                    if c[i] == '['
                        && i + 1 < c.len()
                        && c[i + 1] == ':'
                        && let Some(end) = (i + 2..c.len().saturating_sub(1))
                            .find(|&j| c[j] == ':' && c[j + 1] == ']')
                    {
                        out.extend(&c[i..end + 2]);
                        i = end + 2;
                        continue;
                    }
                    match c[i] {
                        '\\' | '[' | '&' | '~' => {
                            out.push('\\');
                            out.push(c[i]);
                        }
                        '-' if i + 1 < c.len() && c[i + 1] == '-' => out.push_str("\\-"),
                        ch => out.push(ch),
                    }
                    i += 1;
                }
                if i < c.len() {
                    out.push(']');
                    i += 1;
                }
            }
            '{' => {
                if c.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    out.push('{');
                } else {
                    out.push_str("\\{");
                }
                i += 1;
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

fn push_literal(out: &mut String, ch: char) {
    if regex_syntax_meta(ch) {
        out.push('\\');
    }
    out.push(ch);
}

fn regex_syntax_meta(ch: char) -> bool {
    "\\.+*?()|[]{}^$#&-~".contains(ch)
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    icase: bool,
    multiline: bool,
    dotall: bool,
    extended: bool,
    ungreedy: bool,
    anchored: bool,
    posix_extended: bool,
}

fn compile(pattern: &str, f: Flags, dialect: Dialect) -> Result<Engine, String> {
    let mut prefix = String::from("(?");
    if f.icase {
        prefix.push('i');
    }
    if f.multiline {
        prefix.push('m');
    }
    if f.dotall {
        prefix.push('s');
    }
    if f.extended {
        prefix.push('x');
    }
    if f.ungreedy {
        prefix.push('U');
    }
    let body = match dialect {
        Dialect::Posix => posix_to_rust(pattern),
        Dialect::Pcre => pattern.to_string(),
    };
    let body = if f.anchored {
        format!("\\A(?:{body})")
    } else {
        body
    };
    let full = if prefix.len() > 2 {
        format!("{prefix}){body}")
    } else {
        body
    };
    match regex::Regex::new(&full) {
        Ok(r) => Ok(Engine::Plain(r)),
        Err(e) if dialect == Dialect::Pcre => fancy_regex::Regex::new(&full)
            .map(|r| Engine::Fancy(Box::new(r)))
            .map_err(|_| first_line(&e.to_string())),
        Err(e) => Err(first_line(&e.to_string())),
    }
}

fn first_line(s: &str) -> String {
    // regex errors are multi-line with a caret diagram; keep the last line (the reason).
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// A piece of a result template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Group(usize),
}

/// Parses `$n`, `${n}`, `$(n)` and `$$` in a result. `Err` is the warning.
fn parse_template(s: &str, groups: usize) -> Result<Vec<Part>, Vec<String>> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut it = s.char_indices().peekable();
    while let Some((_, ch)) = it.next() {
        if ch != '$' {
            lit.push(ch);
            continue;
        }
        let name: String = match it.peek().map(|p| p.1) {
            Some('$') => {
                it.next();
                lit.push('$');
                continue;
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                it.next();
                let mut n = String::new();
                let mut closed = false;
                for (_, c) in it.by_ref() {
                    if c == close {
                        closed = true;
                        break;
                    }
                    n.push(c);
                }
                if !closed {
                    return Err(vec![
                        format!("missing '{close}' in \"{s}\""),
                        "bad replacement syntax: skipping this rule".into(),
                    ]);
                }
                n
            }
            _ => {
                let mut n = String::new();
                while let Some(&(_, c)) = it.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        n.push(c);
                        it.next();
                    } else {
                        break;
                    }
                }
                n
            }
        };
        if name.is_empty() {
            return Err(vec![
                format!("empty macro name: \"{s}\""),
                "bad replacement syntax: skipping this rule".into(),
            ]);
        }
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(vec![
                format!("non-numeric replacement index \"{name}\""),
                "bad replacement syntax: skipping this rule".into(),
            ]);
        }
        let n: usize = name.parse().unwrap_or(usize::MAX);
        if n == 0 {
            return Err(vec![
                format!("out-of-range replacement index \"{name}\""),
                "bad replacement syntax: skipping this rule".into(),
            ]);
        }
        if n > groups {
            return Err(vec![format!(
                "out of range replacement index \"{name}\": skipping this rule"
            )]);
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        parts.push(Part::Group(n));
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

struct Pattern {
    engine: Engine,
    negate: bool,
}

enum Rule {
    Match {
        pat: Pattern,
        /// regexp: `/a/!/b/`: b must not match.
        unless: Option<Engine>,
        result: Vec<Part>,
        needs_caps: bool,
    },
    /// Skip to `end` unless the pattern (negated as given) matches.
    If {
        pat: Pattern,
        end: usize,
    },
    Endif,
}

/// A loaded `regexp:` or `pcre:` table.
pub struct RegexpMap {
    rules: Vec<Rule>,
    warnings: Vec<String>,
}

/// Reads `/pattern/flags` at the start of `s`: (pattern, negate, flags, rest).
fn get_pat(s: &str, dialect: Dialect) -> Result<(String, bool, Flags, &str), String> {
    let mut p = s;
    let mut negate = false;
    while let Some(r) = p.strip_prefix('!') {
        negate = !negate;
        p = r.trim_start();
    }
    let mut chars = p.char_indices();
    let Some((_, delim)) = chars.next() else {
        return Err("no regexp: skipping this rule".into());
    };
    let body = &p[delim.len_utf8()..];
    let mut end = None;
    let mut esc = false;
    for (i, c) in body.char_indices() {
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let Some(end) = end else {
        return Err(format!(
            "no closing regexp delimiter \"{delim}\": skipping this rule"
        ));
    };
    let pattern = body[..end].to_string();
    let mut rest = &body[end + delim.len_utf8()..];
    let mut f = Flags {
        icase: true,
        multiline: false,
        dotall: true,
        extended: false,
        ungreedy: false,
        anchored: false,
        posix_extended: true,
    };
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_whitespace() || (dialect == Dialect::Posix && c == '!') {
            break;
        }
        match (dialect, c) {
            (_, 'i') => f.icase = !f.icase,
            (Dialect::Posix, 'm') => {
                f.multiline = !f.multiline;
                f.dotall = !f.multiline;
            }
            (Dialect::Posix, 'x') => f.posix_extended = !f.posix_extended,
            (Dialect::Pcre, 'm') => f.multiline = !f.multiline,
            (Dialect::Pcre, 's') => f.dotall = !f.dotall,
            (Dialect::Pcre, 'x') => f.extended = !f.extended,
            (Dialect::Pcre, 'U') => f.ungreedy = !f.ungreedy,
            (Dialect::Pcre, 'A') => f.anchored = !f.anchored,
            (Dialect::Pcre, 'E' | 'X') => {}
            _ => {
                return Err(format!("unknown regexp option \"{c}\": skipping this rule"));
            }
        }
        rest = &rest[c.len_utf8()..];
    }
    if !f.posix_extended {
        return Err(
            "basic regular expressions (flag x) are not supported: skipping this rule".into(),
        );
    }
    Ok((pattern, negate, f, rest))
}

fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let n = word.len();
    if text.len() >= n
        && text.is_char_boundary(n)
        && text[..n].eq_ignore_ascii_case(word)
        && !text[n..].starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some(&text[n..])
    } else {
        None
    }
}

impl RegexpMap {
    /// Loads and compiles a table file.
    pub fn open(path: &str, dialect: Dialect) -> Result<RegexpMap, MapError> {
        let f =
            std::fs::File::open(path).map_err(|e| MapError::temp(format!("open {path}: {e}")))?;
        Self::load(BufReader::new(f), path, dialect)
    }

    /// Loads a table from text (`path` names it in warnings).
    pub fn load<R: std::io::BufRead>(
        input: R,
        path: &str,
        dialect: Dialect,
    ) -> Result<RegexpMap, MapError> {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        let mut open_ifs: Vec<(usize, usize)> = Vec::new(); // (rule index, line)
        let tag = dialect.name();
        for l in LogicalLines::new(input) {
            let l = l.map_err(|e| MapError::temp(format!("read {path}: {e}")))?;
            let mut warn = |w: String| {
                warnings.push(format!("{tag} map {path}, line {}: {w}", l.line));
            };
            let text = l.text.trim_start();
            if text.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                if let Some(rest) = keyword(text, "if") {
                    let rest = rest.trim_start();
                    match get_pat(rest, dialect) {
                        Err(w) => {
                            warn(w);
                            continue;
                        }
                        Ok((pattern, negate, flags, extra)) => {
                            let extra = extra.trim();
                            if !extra.is_empty() {
                                warn(format!(
                                    "ignoring extra text after IF statement: \"{extra}\""
                                ));
                            }
                            match compile(&pattern, flags, dialect) {
                                Err(e) => {
                                    warn(e);
                                    // Postfix skips a broken IF's whole block: an IF
                                    // that never matches.
                                    continue;
                                }
                                Ok(engine) => {
                                    open_ifs.push((rules.len(), l.line));
                                    rules.push(Rule::If {
                                        pat: Pattern { engine, negate },
                                        end: usize::MAX,
                                    });
                                }
                            }
                        }
                    }
                } else if let Some(rest) = keyword(text, "endif") {
                    if !rest.trim().is_empty() {
                        warn(format!(
                            "ignoring extra text after ENDIF: \"{}\"",
                            rest.trim()
                        ));
                    }
                    match open_ifs.pop() {
                        None => warn("ignoring ENDIF without matching IF".into()),
                        Some((idx, _)) => {
                            let end = rules.len() + 1;
                            if let Some(Rule::If { end: e, .. }) = rules.get_mut(idx) {
                                *e = end;
                            }
                            rules.push(Rule::Endif);
                        }
                    }
                } else {
                    warn("ignoring unrecognized request".into());
                }
                continue;
            }
            let (pattern, negate, flags, rest) = match get_pat(text, dialect) {
                Ok(x) => x,
                Err(w) => {
                    warn(w);
                    continue;
                }
            };
            let mut rest = rest;
            let mut unless = None;
            if dialect == Dialect::Posix && rest.starts_with('!') {
                match get_pat(&rest[1..], dialect) {
                    Ok((p2, _, f2, r2)) => match compile(&p2, f2, dialect) {
                        Ok(e) => {
                            unless = Some(e);
                            rest = r2;
                        }
                        Err(e) => {
                            warn(e);
                            continue;
                        }
                    },
                    Err(w) => {
                        warn(w);
                        continue;
                    }
                }
            }
            let engine = match compile(&pattern, flags, dialect) {
                Ok(e) => e,
                Err(e) => {
                    warn(e);
                    continue;
                }
            };
            let result = rest.trim();
            if result.is_empty() {
                warn("no replacement text: using empty string".into());
            }
            let groups = if negate || unless.is_some() {
                0
            } else {
                engine.groups()
            };
            let parts = match parse_template(result, groups) {
                Ok(p) => p,
                Err(ws) => {
                    if negate && result.contains('$') && !result.contains("$$") {
                        warn(
                            "$number found in negative match replacement text: skipping this rule"
                                .into(),
                        );
                    } else {
                        for w in ws {
                            warn(w);
                        }
                    }
                    continue;
                }
            };
            let needs_caps = parts.iter().any(|p| matches!(p, Part::Group(_)));
            rules.push(Rule::Match {
                pat: Pattern { engine, negate },
                unless,
                result: parts,
                needs_caps,
            });
        }
        while let Some((idx, line)) = open_ifs.pop() {
            warnings.push(format!(
                "{tag} map {path}, line {line}: IF has no matching ENDIF"
            ));
            let end = rules.len();
            if let Some(Rule::If { end: e, .. }) = rules.get_mut(idx) {
                *e = end;
            }
        }
        Ok(RegexpMap { rules, warnings })
    }
}

impl Map for RegexpMap {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let mut caps = Vec::new();
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::Endif => i += 1,
                Rule::If { pat, end } => {
                    let m = pat.engine.matches(key, None).map_err(MapError::temp)?;
                    i = if m != pat.negate { i + 1 } else { *end };
                }
                Rule::Match {
                    pat,
                    unless,
                    result,
                    needs_caps,
                } => {
                    i += 1;
                    let want = *needs_caps && !pat.negate;
                    let m = pat
                        .engine
                        .matches(key, want.then_some(&mut caps))
                        .map_err(MapError::temp)?;
                    if m == pat.negate {
                        continue;
                    }
                    if let Some(u) = unless
                        && u.matches(key, None).map_err(MapError::temp)?
                    {
                        continue;
                    }
                    let mut out = String::new();
                    for p in result {
                        match p {
                            Part::Lit(s) => out.push_str(s),
                            Part::Group(n) => {
                                out.push_str(caps.get(*n).map(String::as_str).unwrap_or(""))
                            }
                        }
                    }
                    return Ok(Some(out));
                }
            }
        }
        Ok(None)
    }

    fn match_kind(&self) -> MatchKind {
        MatchKind::Pattern
    }

    fn folds_case(&self) -> bool {
        false
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(src: &str, d: Dialect) -> RegexpMap {
        RegexpMap::load(src.as_bytes(), "t", d).expect("load")
    }

    fn q(m: &RegexpMap, k: &str) -> Option<String> {
        m.lookup(k).ok().flatten()
    }

    #[test]
    fn substitution_and_order() {
        let m = map(
            "/^(.*)@example\\.com$/ user=$1\n/(a)(b)?/ [$1][${2}]\n!/n/ notn\n",
            Dialect::Posix,
        );
        assert_eq!(q(&m, "Joe@EXAMPLE.com").as_deref(), Some("user=Joe"));
        assert_eq!(q(&m, "xa").as_deref(), Some("[a][]"));
        assert_eq!(q(&m, "zzz").as_deref(), Some("notn"));
        assert_eq!(q(&m, "nnn"), None);
    }

    #[test]
    fn if_endif_nesting() {
        let m = map(
            "if /^a/\nif !/b/\n/./ a-not-b\nendif\n/./ a-b\nendif\n/./ other\n",
            Dialect::Posix,
        );
        assert_eq!(q(&m, "ax").as_deref(), Some("a-not-b"));
        assert_eq!(q(&m, "ab").as_deref(), Some("a-b"));
        assert_eq!(q(&m, "x").as_deref(), Some("other"));
    }

    #[test]
    fn bad_rules_are_skipped_with_warnings() {
        let m = map(
            "/foo(/ bad\n/x/q weird\n/y/ $5\n/(z)/ $0\n/nores/\nendif\n/ok/ fine\n",
            Dialect::Posix,
        );
        assert_eq!(q(&m, "ok").as_deref(), Some("fine"));
        assert_eq!(q(&m, "nores").as_deref(), Some(""));
        assert_eq!(q(&m, "y"), None);
        let w = m.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("line 2: unknown regexp option \"q\""))
        );
        assert!(
            w.iter()
                .any(|w| w.contains("line 3: out of range replacement index \"5\""))
        );
        assert!(
            w.iter()
                .any(|w| w.contains("line 6: ignoring ENDIF without matching IF"))
        );
    }

    #[test]
    fn case_flags_and_posix_translation() {
        let m = map(
            "/^Q/i upper-only\n/[\\.]x/ bs\n/a{/ brace\n/\\<word\\>/ w\n/^(foo|bar)$/ fb\n",
            Dialect::Posix,
        );
        assert_eq!(q(&m, "q"), None);
        assert_eq!(q(&m, "Q").as_deref(), Some("upper-only"));
        assert_eq!(q(&m, "\\x").as_deref(), Some("bs"));
        assert_eq!(q(&m, "a{").as_deref(), Some("brace"));
        assert_eq!(q(&m, "a word here").as_deref(), Some("w"));
        assert_eq!(q(&m, "BAR").as_deref(), Some("fb"));
    }

    #[test]
    fn two_pattern_form() {
        let m = map("/c/!/cd/ c-not-cd\n", Dialect::Posix);
        assert_eq!(q(&m, "c").as_deref(), Some("c-not-cd"));
        assert_eq!(q(&m, "cd"), None);
    }

    #[test]
    fn pcre_features() {
        let m = map(
            "/^(.+)(?=x)/ look $1\n/(a)\\1/ back\n/^a.b$/ dot\n/^A/A anch\n",
            Dialect::Pcre,
        );
        assert_eq!(q(&m, "yyx").as_deref(), Some("look yy"));
        assert_eq!(q(&m, "zaa").as_deref(), Some("back"));
        assert_eq!(q(&m, "a\nb").as_deref(), Some("dot"));
        let w = map("/c/!/cd/ x\n", Dialect::Pcre).warnings();
        assert!(w.iter().any(|w| w.contains("unknown regexp option \"!\"")));
    }
}

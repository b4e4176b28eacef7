//! main.cf: `name = value` logical lines, with Postfix's rules (the last definition wins).

use crate::error::ConfigError;
use crate::lines::{LogicalLine, logical_lines_with_warnings};
use std::path::{Path, PathBuf};

/// One `name = value` definition and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    /// 1-based physical line numbers of the definition (continuations included).
    pub first: usize,
    pub last: usize,
}

/// A parsed main.cf. `entries` keeps every definition in file order, duplicates included,
/// so that `postconf` can warn about overrides; [`MainCf::get`] returns the last one.
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    /// The file was not UTF-8 and was decoded byte for byte (see [`decode`]).
    pub latin1: bool,
    /// Problems that do not stop parsing, as `file:line: text` (Postfix warns likewise).
    pub warnings: Vec<String>,
}

/// Decodes a configuration file without losing bytes: UTF-8 when it is valid UTF-8, else
/// one char per byte (Latin-1), so that tools can write the file back unchanged.
pub fn decode(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (bytes.iter().map(|&b| b as char).collect(), true),
    }
}

/// The inverse of [`decode`].
pub fn encode(text: &str, latin1: bool) -> Vec<u8> {
    if latin1 {
        text.chars().map(|c| c as u32 as u8).collect()
    } else {
        text.as_bytes().to_vec()
    }
}

/// Splits `name = value` as Postfix's split_nameval: the name ends at white space or `=`.
pub fn split_nameval(text: &str) -> Result<(&str, &str), &'static str> {
    let end = text
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(text.len());
    let name = &text[..end];
    if name.is_empty() {
        return Err("missing attribute name");
    }
    let rest = text[end..].trim_start();
    let Some(value) = rest.strip_prefix('=') else {
        return Err("missing '=' after attribute name");
    };
    Ok((name, value.trim()))
}

impl MainCf {
    /// Parses main.cf text; `path` is used in error messages only.
    pub fn parse(path: &Path, text: &str) -> Result<MainCf, ConfigError> {
        let mut entries = Vec::new();
        let (lines, ignored) = logical_lines_with_warnings(text);
        let warnings = ignored
            .into_iter()
            .map(|(n, t)| {
                // Postfix quotes at most 30 characters of the offending text.
                let shown: String = if t.chars().count() > 30 {
                    t.chars().take(30).chain("...".chars()).collect()
                } else {
                    t
                };
                format!(
                    "{}:{}: logical line must not start with whitespace: \"{}\"",
                    path.display(),
                    n,
                    shown
                )
            })
            .collect();
        for LogicalLine { text, first, last } in lines {
            let (name, value) = split_nameval(&text).map_err(|what| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: first,
                message: format!("{what}: \"{text}\""),
            })?;
            entries.push(Entry {
                name: name.to_string(),
                value: value.to_string(),
                first,
                last,
            });
        }
        Ok(MainCf {
            path: path.to_path_buf(),
            entries,
            latin1: false,
            warnings,
        })
    }

    /// Reads and parses a file. A missing file is an error (Postfix refuses to run without).
    pub fn load(path: &Path) -> Result<MainCf, ConfigError> {
        let text = std::fs::read(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        let (text, latin1) = decode(&text);
        let mut m = MainCf::parse(path, &text)?;
        m.latin1 = latin1;
        Ok(m)
    }

    /// The value in effect for `name` (the last definition), if main.cf defines it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// Definitions that a later one overrides, paired with the line of the overriding one.
    pub fn overridden(&self) -> Vec<(&Entry, &Entry)> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(later) = self.entries[i + 1..].iter().find(|l| l.name == e.name) {
                out.push((e, later));
            }
        }
        out
    }

    /// The names defined, each once, in order of first definition.
    pub fn names(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !seen.contains(&e.name.as_str()) {
                seen.push(&e.name);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<MainCf, ConfigError> {
        MainCf::parse(Path::new("main.cf"), t)
    }

    #[test]
    fn basic_rules() {
        let m = parse("# c\n\na = 1\nb=2\n  ,3\nc =\na = last\n").expect("parses");
        assert_eq!(m.get("a"), Some("last"));
        assert_eq!(m.get("b"), Some("2 ,3"));
        assert_eq!(m.get("c"), Some(""));
        assert_eq!(m.get("d"), None);
        assert_eq!(m.names(), vec!["a", "b", "c"]);
        assert_eq!(m.overridden().len(), 1);
        assert_eq!(m.entries[1].first, 4);
        assert_eq!(m.entries[1].last, 5);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("a = 1\n\nbad line\n").expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "main.cf:3: missing '=' after attribute name: \"bad line\""
        );
        let e = parse("= x\n").expect_err("must fail");
        assert!(
            e.to_string()
                .starts_with("main.cf:1: missing attribute name")
        );
    }

    #[test]
    fn non_utf8_round_trips() {
        let raw = b"a = caf\xe9 \xff\n";
        let (t, latin1) = decode(raw);
        assert!(latin1);
        assert_eq!(encode(&t, latin1), raw.to_vec());
        let (t, latin1) = decode("a = caf\u{e9}\n".as_bytes());
        assert!(!latin1);
        assert_eq!(encode(&t, latin1), "a = caf\u{e9}\n".as_bytes().to_vec());
    }

    #[test]
    fn value_keeps_inner_spacing_and_hashes() {
        let m = parse("a =  x  y # not a comment  \n").expect("parses");
        assert_eq!(m.get("a"), Some("x  y # not a comment"));
    }
}

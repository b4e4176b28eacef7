//! `inline:{ key=value, { key = value with spaces }, ... }` — a table written in main.cf.
//!
//! Items are separated by commas or white space; an item with spaces is wrapped in
//! braces. Each item is `name=value` with white space around `=` ignored (Postfix's
//! `split_qnameval`). An item without `=` makes the table unusable, as in Postfix.

use crate::{Map, MapConfig, MapError, strip_braces};
use std::collections::HashMap;

/// An in-memory table from its main.cf text.
pub struct Inline {
    entries: HashMap<String, String>,
    order: Vec<String>,
}

/// Splits on commas/white space outside braces; braces around an item are removed.
pub(crate) fn split_items(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut braced = false;
    for c in s.chars() {
        match c {
            '{' => {
                if depth == 0 && cur.trim().is_empty() {
                    braced = true;
                    cur.clear();
                } else {
                    cur.push(c);
                }
                depth += 1;
            }
            '}' => {
                if depth == 0 {
                    return Err("unbalanced '}'".into());
                }
                depth -= 1;
                if depth > 0 || !braced {
                    cur.push(c);
                }
            }
            c if depth == 0 && (c == ',' || c.is_ascii_whitespace()) => {
                if !cur.is_empty() || braced {
                    out.push(std::mem::take(&mut cur).trim().to_string());
                }
                braced = false;
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err("missing '}'".into());
    }
    if !cur.is_empty() || braced {
        out.push(cur.trim().to_string());
    }
    Ok(out)
}

impl Inline {
    /// Parses `name` (with or without its outer braces).
    pub fn open(spec: &str, name: &str, cfg: &MapConfig) -> Result<Inline, MapError> {
        let body = strip_braces(name).ok_or_else(|| {
            MapError::syntax(format!(
                "bad syntax: \"{spec}\"; need \"inline:{{name=value...}}\""
            ))
        })?;
        let items = split_items(body).map_err(|e| {
            MapError::syntax(format!(
                "{e} in \"{spec}\"; need \"inline:{{name=value...}}\""
            ))
        })?;
        let mut t = Inline {
            entries: HashMap::new(),
            order: Vec::new(),
        };
        for item in items {
            let Some((k, v)) = item.split_once('=') else {
                return Err(MapError::syntax(format!(
                    "missing '=' after attribute name: \"{spec}\"; need \"inline:{{name=value...}}\""
                )));
            };
            let k = k.trim();
            let k = if cfg.fold_case {
                k.to_ascii_lowercase()
            } else {
                k.to_string()
            };
            if k.is_empty() {
                return Err(MapError::syntax(format!(
                    "missing attribute name: \"{spec}\"; need \"inline:{{name=value...}}\""
                )));
            }
            if !t.entries.contains_key(&k) {
                t.order.push(k.clone());
                t.entries.insert(k, v.trim().to_string());
            }
        }
        Ok(t)
    }
}

impl Map for Inline {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(self.entries.get(key).cloned())
    }

    fn dump(&self) -> Result<Vec<(String, String)>, MapError> {
        Ok(self
            .order
            .iter()
            .filter_map(|k| self.entries.get(k).map(|v| (k.clone(), v.clone())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table;

    #[test]
    fn parses_items() {
        let t =
            Table::open("inline:{ K=v1, {k2 = v 2} k3= }", &MapConfig::default()).expect("open");
        assert_eq!(t.lookup("k").ok().flatten().as_deref(), Some("v1"));
        assert_eq!(t.lookup("K2").ok().flatten().as_deref(), Some("v 2"));
        assert_eq!(t.lookup("k3").ok().flatten().as_deref(), Some(""));
        assert!(Table::open("inline:{a=b, c}", &MapConfig::default()).is_err());
        assert!(Table::open("inline:{ k4 = x }", &MapConfig::default()).is_err());
        assert!(Table::open("inline:a=b", &MapConfig::default()).is_err());
    }
}

//! `texthash:` — a postmap source file read into memory at open, no index needed.
//!
//! Same syntax as the source of `hash:` (see [`crate::text`]); duplicate keys keep the
//! first value, as postmap does. The file is read once: a daemon sees changes only when it
//! reopens the table.

use crate::text::{SourceFormat, read_records};
use crate::{Map, MapConfig, MapError};
use std::collections::HashMap;
use std::io::BufReader;

/// An in-memory table from a `key value` file.
pub struct TextHash {
    entries: HashMap<String, String>,
    order: Vec<String>,
    warnings: Vec<String>,
}

impl TextHash {
    /// Reads `path`. Keys are folded at load when `cfg.fold_case`.
    pub fn open(path: &str, cfg: &MapConfig) -> Result<TextHash, MapError> {
        let f =
            std::fs::File::open(path).map_err(|e| MapError::temp(format!("open {path}: {e}")))?;
        let mut t = TextHash {
            entries: HashMap::new(),
            order: Vec::new(),
            warnings: Vec::new(),
        };
        let mut warnings = Vec::new();
        let mut records = Vec::new();
        read_records(
            BufReader::new(f),
            SourceFormat::Postmap,
            |line, w| warnings.push(format!("{path}, line {line}: {w}")),
            |r| records.push(r),
        )
        .map_err(|e| MapError::temp(format!("read {path}: {e}")))?;
        for r in records {
            let key = if cfg.fold_case {
                r.key.to_ascii_lowercase()
            } else {
                r.key
            };
            if t.entries.contains_key(&key) {
                warnings.push(format!(
                    "{path}, line {}: duplicate entry: \"{key}\"",
                    r.line
                ));
                continue;
            }
            t.order.push(key.clone());
            t.entries.insert(key, r.value);
        }
        t.warnings = warnings;
        Ok(t)
    }
}

impl Map for TextHash {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(self.entries.get(key).cloned())
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
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
    fn reads_and_folds() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("t");
        assert!(std::fs::write(&p, "Foo bar\nfoo second\n# c\nlonely\nx  y z \n").is_ok());
        let t =
            Table::open(&format!("texthash:{}", p.display()), &MapConfig::default()).expect("open");
        assert_eq!(t.lookup("FOO").ok().flatten().as_deref(), Some("bar"));
        assert_eq!(t.lookup("x").ok().flatten().as_deref(), Some("y z"));
        assert_eq!(t.lookup("lonely").ok().flatten(), None);
        assert_eq!(t.warnings().len(), 2);
        assert!(Table::open("texthash:/nonexistent/x", &MapConfig::default()).is_err());
    }
}

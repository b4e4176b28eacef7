//! `static:`, `fail:` and `environ:` — tables without a file.

use crate::{Map, MapError, strip_braces};

/// `static:value` or `static:{ value with spaces }`: every key finds the value.
pub struct Static {
    value: String,
}

impl Static {
    pub fn open(name: &str) -> Static {
        Static {
            value: strip_braces(name).unwrap_or(name).to_string(),
        }
    }
}

impl Map for Static {
    fn lookup(&self, _key: &str) -> Result<Option<String>, MapError> {
        Ok(Some(self.value.clone()))
    }

    fn folds_case(&self) -> bool {
        false
    }
}

/// `fail:name`: every lookup fails temporarily (for testing error paths).
pub struct Fail {
    spec: String,
}

impl Fail {
    pub fn open(spec: &str) -> Fail {
        Fail {
            spec: spec.to_string(),
        }
    }
}

impl Map for Fail {
    fn lookup(&self, _key: &str) -> Result<Option<String>, MapError> {
        Err(MapError::temp(format!("{}: query error", self.spec)))
    }
}

/// `environ:name`: the process environment (keys are folded like any table's, so
/// upper-case variable names are found only with folding off, as in Postfix).
pub struct Environ;

impl Map for Environ {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        Ok(std::env::var_os(key).map(|v| v.to_string_lossy().into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use crate::{MapConfig, Table};

    #[test]
    fn static_and_fail() {
        let cfg = MapConfig::default();
        let s = Table::open("static:{ a b }", &cfg).expect("static");
        assert_eq!(s.lookup("x").ok().flatten().as_deref(), Some("a b"));
        let f = Table::open("fail:oops", &cfg).expect("fail");
        assert!(f.lookup("x").is_err_and(|e| e.is_temporary()));
    }
}

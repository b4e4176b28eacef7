//! SQL tables: placeholder until the SQL section lands.
use crate::{Map, MapError};
pub fn open(kind: &str, name: &str) -> Result<Box<dyn Map>, MapError> {
    Err(MapError::unsupported(format!("{kind}:{name}: not yet")))
}

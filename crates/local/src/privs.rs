//! Delivering with the recipient's rights: the shared mechanism is
//! `oxipost_daemon::privs`; this module adds reading `.forward` and `:include:` files as
//! their user.

use std::fs::File;

pub use oxipost_daemon::privs::{Identity, privileged, run_as};
use oxipost_ipc::RcptResult;

/// Largest `.forward` or `:include:` file read.
const READ_LIMIT: u64 = 256 << 10;

/// Reads a small file (`.forward`, `:include:`) with the rights of `id`, so that a user's
/// `.forward` cannot name a file only root may read. `Ok(None)`: the file does not exist.
pub fn read_as(id: &Identity, path: &std::path::Path) -> Result<Option<String>, String> {
    fn read(path: &std::path::Path) -> Result<Option<String>, String> {
        use std::io::Read;
        match File::open(path) {
            Ok(f) => {
                let mut buf = Vec::new();
                f.take(READ_LIMIT)
                    .read_to_end(&mut buf)
                    .map_err(|e| format!("read {}: {e}", path.display()))?;
                Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("open {}: {e}", path.display())),
        }
    }
    if !privileged() {
        return read(path);
    }
    // Most users have no `.forward`: root seeing no file at all (it can search every
    // directory) means the user cannot read one either, and saves a fork per message. Any
    // other answer (an NFS root squash says EACCES) is settled by reading as the user.
    if let Err(e) = std::fs::metadata(path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Ok(None);
    }
    // The answer travels as one result frame: outcome Delivered = content, Bounced = no
    // such file, Deferred = error text.
    let results = run_as(id, || {
        let (outcome, text) = match read(path) {
            Ok(Some(t)) => (oxipost_ipc::Outcome::Delivered, t),
            Ok(None) => (oxipost_ipc::Outcome::Bounced, String::new()),
            Err(e) => (oxipost_ipc::Outcome::Deferred, e),
        };
        vec![RcptResult {
            index: 0,
            outcome,
            status: String::new(),
            text,
            relay: String::new(),
        }]
    })?;
    match results.into_iter().next() {
        Some(r) if r.outcome == oxipost_ipc::Outcome::Delivered => Ok(Some(r.text)),
        Some(r) if r.outcome == oxipost_ipc::Outcome::Bounced => Ok(None),
        Some(r) => Err(r.text),
        None => Err(format!("read {}: no answer", path.display())),
    }
}

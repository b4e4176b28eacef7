//! The status file `data_directory/master.status`, which `mailctl status` reads: master
//! rewrites it (temp file, then rename) whenever a worker count changes. Format, one item
//! per line, space separated:
//!
//! ```text
//! pid 1234
//! started 1700000000
//! generation 2
//! service smtp/inet total 2 idle 1 limit 100 throttled 0 program /usr/lib/oxipost/smtpd
//! ```

use crate::service::ServiceState;
use std::path::{Path, PathBuf};

pub const STATUS_NAME: &str = "master.status";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATUS_NAME)
}

pub fn write(
    data_dir: &Path,
    started: u64,
    generation: u32,
    default_limit: u32,
    services: &[&ServiceState],
    program: impl Fn(&ServiceState) -> String,
) -> std::io::Result<()> {
    let mut text = format!(
        "pid {}\nstarted {started}\ngeneration {generation}\n",
        std::process::id()
    );
    for s in services {
        text.push_str(&format!(
            "service {} total {} idle {} limit {} throttled {} program {}\n",
            s.key(),
            s.total(),
            s.idle(),
            s.limit(default_limit),
            u8::from(s.throttled_until.is_some()),
            program(s)
        ));
    }
    let final_path = path(data_dir);
    let tmp = data_dir.join(format!("{STATUS_NAME}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, final_path)
}

pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}

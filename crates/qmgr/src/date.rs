//! RFC 5322 dates in local time, for the headers of notifications.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn rfc5322(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r and strftime write only into the buffers passed.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return "Thu, 1 Jan 1970 00:00:00 +0000".into();
    }
    let mut buf = [0u8; 64];
    let fmt = c"%a, %e %b %Y %H:%M:%S %z";
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm) };
    let s = String::from_utf8_lossy(&buf[..n]).into_owned();
    // %e pads the day with a space; RFC 5322 wants it without.
    s.replacen(",  ", ", ", 1)
}

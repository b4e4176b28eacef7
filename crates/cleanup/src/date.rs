//! Dates as Postfix writes them (`mail_date()`): `Tue,  2 Jan 2024 10:00:00 +0100 (CET)`.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn secs(t: SystemTime) -> libc::time_t {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    libc::time_t::try_from(s).unwrap_or(libc::time_t::MAX)
}

fn broken_down(t: SystemTime, local: bool) -> Option<libc::tm> {
    let s = secs(t);
    // SAFETY: an all-zero tm is a valid value; localtime_r/gmtime_r fill it from `s`, and
    // tm_zone then points into libc's static zone name table.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe {
        if local {
            libc::localtime_r(&s, &mut tm)
        } else {
            libc::gmtime_r(&s, &mut tm)
        }
    };
    (!r.is_null()).then_some(tm)
}

fn name(table: &[&'static str], i: libc::c_int) -> &'static str {
    usize::try_from(i)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
        .unwrap_or("???")
}

/// The RFC 5322 date of `t` in local time, in Postfix's format: day of month padded with a
/// space (`%e`), numeric zone, and the zone name in parentheses.
pub fn mail_date(t: SystemTime) -> String {
    let Some(tm) = broken_down(t, true) else {
        return "Thu,  1 Jan 1970 00:00:00 +0000 (UTC)".to_owned();
    };
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone from localtime_r is a NUL-terminated static string.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let mut s = format!(
        "{}, {:2} {} {} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        name(&DAYS, tm.tm_wday),
        tm.tm_mday,
        name(&MONTHS, tm.tm_mon),
        i64::from(tm.tm_year) + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off / 60,
        off % 60,
    );
    if !zone.is_empty() && zone.bytes().all(|b| b.is_ascii_graphic()) {
        s.push_str(&format!(" ({zone})"));
    }
    s
}

/// `YYYYMMDDhhmmss` in UTC, the first part of a Postfix `Message-Id:`.
pub fn message_id_stamp(t: SystemTime) -> String {
    match broken_down(t, false) {
        Some(tm) => format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => "19700101000000".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamp_is_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_704_189_845); // 2024-01-02 10:04:05 UTC
        assert_eq!(message_id_stamp(t), "20240102100405");
    }

    #[test]
    fn date_shape() {
        let t = UNIX_EPOCH + Duration::from_secs(1_704_189_845);
        let d = mail_date(t);
        // Day of month is space-padded as in Postfix (`%e`).
        assert!(
            d.contains(" 2 Jan 2024") || d.contains(" 1 Jan 2024"),
            "{d}"
        );
        let zone = d
            .split(' ')
            .find(|w| w.starts_with('+') || w.starts_with('-'));
        assert!(zone.is_some_and(|z| z.len() == 5), "{d}");
    }
}

//! Reading the time an event happened from the start of its line, so that session timeouts
//! follow the log's own clock (a replay then behaves like the live stream it records).

use chrono::NaiveDate;

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
}

fn to_unix(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(y, mo, d)?;
    Some(date.and_hms_opt(h, mi, s)?.and_utc().timestamp())
}

fn month(name: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    MONTHS
        .iter()
        .position(|m| m.as_slice() == name)
        .map(|i| i as u32 + 1)
}

/// `HH:MM:SS` at the start of `b`.
fn clock(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Some((digits(&b[..2])?, digits(&b[3..5])?, digits(&b[6..8])?))
}

/// Year assumed for shapes that carry none (syslog, logcat): only differences matter, and a
/// leap year accepts February 29.
const YEARLESS: i32 = 2000;

/// Syslog's `Jun 14 15:16:01` (day padded with a space or a zero).
fn syslog_time(b: &[u8]) -> Option<i64> {
    if b.len() < 15 || b[3] != b' ' {
        return None;
    }
    let mo = month(&b[..3])?;
    let day = &b[4..6];
    let d = digits(day.strip_prefix(b" ").unwrap_or(day))?;
    if b[6] != b' ' {
        return None;
    }
    let (h, mi, s) = clock(&b[7..])?;
    to_unix(YEARLESS, mo, d, h, mi, s)
}

/// Apache's `[Sun Dec 04 04:47:44 2005]` (and ctime's shape without brackets).
fn ctime_time(b: &[u8]) -> Option<i64> {
    let b = b.strip_prefix(b"[").unwrap_or(b);
    if b.len() < 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    let mo = month(&b[4..7])?;
    let day = &b[8..10];
    let d = digits(day.strip_prefix(b" ").unwrap_or(day))?;
    let (h, mi, s) = clock(&b[11..])?;
    to_unix(digits(&b[20..24])? as i32, mo, d, h, mi, s)
}

/// Logcat's `03-17 16:13:38.811`.
fn month_day_time(b: &[u8]) -> Option<i64> {
    if b.len() < 14 || b[2] != b'-' || b[5] != b' ' {
        return None;
    }
    let (h, mi, s) = clock(&b[6..])?;
    to_unix(YEARLESS, digits(&b[..2])?, digits(&b[3..5])?, h, mi, s)
}

/// Epoch seconds as the first token (`1117838570 2005.06.03 ...`): ten digits, 2001 to 2286.
fn epoch_time(b: &[u8]) -> Option<i64> {
    if b.len() < 11 || b[10] != b' ' {
        return None;
    }
    let secs = &b[..10];
    if !secs.iter().all(u8::is_ascii_digit) || secs[0] == b'0' {
        return None;
    }
    Some(secs.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')))
}

/// The Unix time (seconds, UTC) of a timestamp at the start of `line`, if it has one of the
/// known shapes: HDFS `081109 203615`, ISO 8601 / RFC 3339 `2024-01-15T14:23:47` (or with a
/// space), BGL `2005-06-03-15.42.50`, syslog `Jun 14 15:16:01`, Apache
/// `[Sun Dec 04 04:47:44 2005]`, logcat `03-17 16:13:38.811`, or epoch seconds. Time zones are
/// ignored (treated as UTC) and a shape without a year gets a fixed one: only differences
/// between lines matter.
pub fn leading_timestamp(line: &str) -> Option<i64> {
    let b = line.as_bytes();
    if let Some(at) = syslog_time(b)
        .or_else(|| ctime_time(b))
        .or_else(|| month_day_time(b))
        .or_else(|| epoch_time(b))
    {
        return Some(at);
    }
    if b.len() >= 13 && b[6] == b' ' {
        if let (Some(date), Some(time)) = (digits(&b[..6]), digits(&b[7..13])) {
            return to_unix(
                2000 + (date / 10_000) as i32,
                date / 100 % 100,
                date % 100,
                time / 10_000,
                time / 100 % 100,
                time % 100,
            );
        }
    }
    if b.len() >= 19 && b[4] == b'-' && b[7] == b'-' {
        let y = digits(&b[..4])? as i32;
        let mo = digits(&b[5..7])?;
        let d = digits(&b[8..10])?;
        let (h, mi, s) = match (b[10], b[13], b[16]) {
            (b'T' | b' ', b':', b':') => (
                digits(&b[11..13])?,
                digits(&b[14..16])?,
                digits(&b[17..19])?,
            ),
            (b'-', b'.', b'.') => (
                digits(&b[11..13])?,
                digits(&b[14..16])?,
                digits(&b[17..19])?,
            ),
            _ => return None,
        };
        return to_unix(y, mo, d, h, mi, s);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_shapes() {
        let hdfs = leading_timestamp("081109 203615 148 INFO dfs.DataNode: x").unwrap();
        assert_eq!(hdfs, to_unix(2008, 11, 9, 20, 36, 15).unwrap());
        assert_eq!(
            leading_timestamp("2022-01-15T14:23:47Z error").unwrap(),
            to_unix(2022, 1, 15, 14, 23, 47).unwrap()
        );
        assert_eq!(
            leading_timestamp("2022-01-15 14:23:47,123 INFO").unwrap(),
            to_unix(2022, 1, 15, 14, 23, 47).unwrap()
        );
        assert_eq!(
            leading_timestamp("2005-06-03-15.42.50.675872 R02").unwrap(),
            to_unix(2005, 6, 3, 15, 42, 50).unwrap()
        );
        assert_eq!(
            leading_timestamp("Jun 14 15:16:01 combo sshd[1]: x").unwrap(),
            to_unix(YEARLESS, 6, 14, 15, 16, 1).unwrap()
        );
        assert_eq!(
            leading_timestamp("Jul  1 09:00:55 host kernel[0]: x").unwrap(),
            to_unix(YEARLESS, 7, 1, 9, 0, 55).unwrap()
        );
        assert_eq!(
            leading_timestamp("[Sun Dec 04 04:47:44 2005] [notice] x").unwrap(),
            to_unix(2005, 12, 4, 4, 47, 44).unwrap()
        );
        assert_eq!(
            leading_timestamp("03-17 16:13:38.811  1702  2395 D Wm: x").unwrap(),
            to_unix(YEARLESS, 3, 17, 16, 13, 38).unwrap()
        );
        assert_eq!(
            leading_timestamp("1117838570 2005.06.03 R02-M1 RAS").unwrap(),
            1_117_838_570
        );
        assert_eq!(leading_timestamp("no time here"), None);
        assert_eq!(leading_timestamp("134681 node-246 unix.hw"), None);
        assert_eq!(leading_timestamp("081399 203615 bad month"), None);
    }
}

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

/// The Unix time (seconds, UTC) of a timestamp at the start of `line`, if it has one of the
/// known shapes: HDFS `081109 203615`, ISO 8601 / RFC 3339 `2024-01-15T14:23:47` (or with a
/// space), BGL `2005-06-03-15.42.50`. Time zones are ignored (treated as UTC): only
/// differences between lines matter.
pub fn leading_timestamp(line: &str) -> Option<i64> {
    let b = line.as_bytes();
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
        assert_eq!(leading_timestamp("no time here"), None);
        assert_eq!(leading_timestamp("081399 203615 bad month"), None);
    }
}

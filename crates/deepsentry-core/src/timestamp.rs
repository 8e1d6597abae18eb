//! Reading when an event happened from the event itself: a timestamp at the start of a text
//! line, or a decoded field (`timestamp`, `time`, `ts`, `@timestamp`) holding text or epoch
//! seconds or milliseconds.
//!
//! Shapes read at the start of a line (after an optional `[`): RFC 3339 / ISO 8601
//! (`2024-01-15T14:23:47.123Z`, a space instead of `T`, `,` or `.` before the fraction, an
//! optional `Z` or `±HH:MM` offset), `2024/01/15 14:23:47`, the seed's and HDFS's
//! `YYMMDD HHMMSS`, log4j's `yy/MM/dd HH:mm:ss` (Hadoop, Spark), BGL's
//! `2005-06-03-15.42.50.675872`, syslog's `Jun 14 15:16:01`, ctime's
//! `[Sun Dec 04 04:47:44 2005]`, logcat's `03-17 16:13:38.811`, glog's and Kubernetes' klog
//! `I0115 14:23:47.123456` (the level's letter, then month and day), and ten-digit epoch
//! seconds as the first token. Times without an offset are taken as UTC. Shapes without a year
//! (syslog, logcat, glog) get one from the caller: the current year for an event's time, a
//! fixed one where only differences matter.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Deserialize;

/// Where a source takes an event's time from (its `timestamp` setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventTime {
    /// The event's own time: a decoded time field, else a timestamp leading the line, else
    /// the time it arrived (the default).
    #[default]
    Auto,
    /// The time the line arrived, always.
    Arrival,
}

/// A timestamp read from text, before a year is chosen for shapes that carry none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    year: Option<i32>,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    /// Seconds east of UTC, where the text gives an offset.
    offset: i32,
}

impl Stamp {
    /// The instant, checked to be a real date and time. Plain integer arithmetic rather than
    /// calendar types: every line of a source goes through here.
    fn at(self, year: i32) -> Option<DateTime<Utc>> {
        let year = self.year.unwrap_or(year);
        let valid = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        if !valid {
            return None;
        }
        let seconds = days_from_civil(year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
            - i64::from(self.offset);
        DateTime::from_timestamp(seconds, self.nanos)
    }
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
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

/// A fraction of a second after a `.` or `,` at the start of `b`, as nanoseconds, and the bytes
/// it took.
fn fraction(b: &[u8]) -> (u32, usize) {
    if !matches!(b.first(), Some(b'.' | b',')) {
        return (0, 0);
    }
    let len = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 {
        return (0, 0);
    }
    let kept = &b[1..1 + len.min(9)];
    let nanos = digits(kept).unwrap_or(0) * 10u32.pow(9 - kept.len() as u32);
    (nanos, 1 + len)
}

/// A `Z` or `±HH:MM` / `±HHMM` offset at the start of `b`, as seconds east of UTC.
fn offset(b: &[u8]) -> i32 {
    match b.first() {
        Some(b'Z') => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &b[1..];
            let (h, m) = if rest.len() >= 5 && rest[2] == b':' {
                (digits(&rest[..2]), digits(&rest[3..5]))
            } else if rest.len() >= 4 {
                (digits(&rest[..2]), digits(&rest[2..4]))
            } else {
                (None, None)
            };
            match (h, m) {
                (Some(h), Some(m)) if h < 24 && m < 60 => {
                    let secs = (h * 3600 + m * 60) as i32;
                    if sign == b'-' {
                        -secs
                    } else {
                        secs
                    }
                }
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// A date the caller read, then `HH:MM:SS` and an optional fraction at `b[at..]`.
fn clock_after(b: &[u8], at: usize, year: Option<i32>, month: u32, day: u32) -> Option<Stamp> {
    let (hour, minute, second) = clock(b.get(at..)?)?;
    let (nanos, _) = fraction(&b[at + 8..]);
    Some(Stamp {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset: 0,
    })
}

/// Syslog's `Jun 14 15:16:01` (day padded with a space or a zero).
fn syslog_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 15 || b[3] != b' ' || b[6] != b' ' {
        return None;
    }
    let day = &b[4..6];
    let day = digits(day.strip_prefix(b" ").unwrap_or(day))?;
    clock_after(b, 7, None, month(&b[..3])?, day)
}

/// ctime's `Sun Dec 04 04:47:44 2005` (Apache's error log puts it in brackets).
fn ctime_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    let day = &b[8..10];
    let day = digits(day.strip_prefix(b" ").unwrap_or(day))?;
    let year = digits(&b[20..24])? as i32;
    clock_after(b, 11, Some(year), month(&b[4..7])?, day)
}

/// Logcat's `03-17 16:13:38.811`.
fn month_day_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 14 || b[2] != b'-' || b[5] != b' ' {
        return None;
    }
    clock_after(b, 6, None, digits(&b[..2])?, digits(&b[3..5])?)
}

/// glog's and klog's `I0115 14:23:47.123456`: the level's letter (`I`, `W`, `E`, `F`), month
/// and day, then the clock.
fn glog_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 14 || !matches!(b[0], b'I' | b'W' | b'E' | b'F') || b[5] != b' ' {
        return None;
    }
    clock_after(b, 6, None, digits(&b[1..3])?, digits(&b[3..5])?)
}

/// The level letter of a line that starts with a glog or klog stamp (`E0115 14:23:47.1 ...`
/// gives `E`): there the level is glued to the date, where no level word is.
pub fn glog_level(line: &[u8]) -> Option<u8> {
    glog_shape(line).map(|_| line[0])
}

/// log4j's `17/06/09 20:10:40` (`yy/MM/dd`, Hadoop's and Spark's console pattern).
fn short_year_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 17 || b[2] != b'/' || b[5] != b'/' || b[8] != b' ' {
        return None;
    }
    let year = 2000 + digits(&b[..2])? as i32;
    clock_after(b, 9, Some(year), digits(&b[3..5])?, digits(&b[6..8])?)
}

/// HDFS's and the seed's `081109 203615`.
fn compact_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 13 || b[6] != b' ' || b.get(13).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let (date, time) = (digits(&b[..6])?, digits(&b[7..13])?);
    Some(Stamp {
        year: Some(2000 + (date / 10_000) as i32),
        month: date / 100 % 100,
        day: date % 100,
        hour: time / 10_000,
        minute: time / 100 % 100,
        second: time % 100,
        nanos: 0,
        offset: 0,
    })
}

/// ISO 8601 `2024-01-15T14:23:47`, with a space for the `T`, `/` between the date's parts, or
/// BGL's `2005-06-03-15.42.50`; then an optional fraction and offset.
fn iso_shape(b: &[u8]) -> Option<Stamp> {
    if b.len() < 19 || !matches!((b[4], b[7]), (b'-', b'-') | (b'/', b'/')) {
        return None;
    }
    let clock_ok = match (b[10], b[13], b[16]) {
        (b'T' | b' ', b':', b':') => true,
        (b'-', b'.', b'.') => b[4] == b'-',
        _ => false,
    };
    if !clock_ok {
        return None;
    }
    let (nanos, len) = fraction(&b[19..]);
    Some(Stamp {
        year: Some(digits(&b[..4])? as i32),
        month: digits(&b[5..7])?,
        day: digits(&b[8..10])?,
        hour: digits(&b[11..13])?,
        minute: digits(&b[14..16])?,
        second: digits(&b[17..19])?,
        nanos,
        offset: offset(&b[19 + len..]),
    })
}

/// Ten digits of epoch seconds (2001 to 2286) ending the token.
fn epoch_shape(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 10 || b.get(10).is_some_and(|c| *c != b' ') {
        return None;
    }
    let secs = &b[..10];
    if !secs.iter().all(u8::is_ascii_digit) || secs[0] == b'0' {
        return None;
    }
    let secs = secs.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    DateTime::from_timestamp(secs, 0)
}

/// The time at the start of `text`, a shape without a year placed in `year`.
fn leading_in(text: &[u8], year: i32) -> Option<DateTime<Utc>> {
    let b = text.strip_prefix(b"[").unwrap_or(text);
    if let Some(at) = epoch_shape(b) {
        return Some(at);
    }
    syslog_shape(b)
        .or_else(|| ctime_shape(b))
        .or_else(|| month_day_shape(b))
        .or_else(|| glog_shape(b))
        .or_else(|| compact_shape(b))
        .or_else(|| short_year_shape(b))
        .or_else(|| iso_shape(b))?
        .at(year)
}

/// Year given to shapes that carry none where only differences between lines matter; a leap
/// year, so February 29 is accepted.
pub const YEARLESS: i32 = 2000;

/// A clock for reading a log whose times are only compared with each other (training):
/// shapes without a year land in [`YEARLESS`], and an event dated at this instant had no time
/// of its own.
pub fn yearless_clock() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(YEARLESS, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .expect("a valid date")
        .and_utc()
}

/// Unix seconds of a timestamp at the start of `line`, a shape without a year placed in
/// [`YEARLESS`]: for clocks that only compare lines of one log with each other.
pub fn leading_unix(line: &str) -> Option<i64> {
    leading_in(line.as_bytes(), YEARLESS).map(|at| at.timestamp())
}

/// The time of a timestamp at the start of `line`. A shape without a year gets `now`'s year,
/// or the year before where that would put it more than a day after `now` (a December line
/// read in January).
pub fn leading(line: &[u8], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let at = leading_in(line, now.year())?;
    if at > now + chrono::Duration::days(1) && !has_year(line) {
        return leading_in(line, now.year() - 1);
    }
    Some(at)
}

/// Whether the timestamp leading `line` names its year.
fn has_year(line: &[u8]) -> bool {
    let b = line.strip_prefix(b"[").unwrap_or(line);
    syslog_shape(b).is_none() && month_day_shape(b).is_none() && glog_shape(b).is_none()
}

/// Whether `line` starts with a timestamp of a known shape.
pub fn starts_with_timestamp(line: &[u8]) -> bool {
    leading_in(line, YEARLESS).is_some()
}

/// The time held by a decoded field: epoch seconds, milliseconds, microseconds or nanoseconds
/// (told apart by magnitude), as a number or as digits; or text starting with a timestamp.
pub fn from_field(value: &serde_json::Value, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match value {
        serde_json::Value::Number(n) => from_epoch(n.as_f64()?),
        serde_json::Value::String(s) => match s.parse::<f64>() {
            Ok(x) => from_epoch(x),
            Err(_) => leading(s.as_bytes(), now),
        },
        _ => None,
    }
}

/// An epoch number in seconds, milliseconds, microseconds or nanoseconds.
fn from_epoch(x: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() || x <= 0.0 {
        return None;
    }
    let nanos = if x < 1e11 {
        x * 1e9
    } else if x < 1e14 {
        x * 1e6
    } else if x < 1e17 {
        x * 1e3
    } else {
        x
    };
    Some(DateTime::from_timestamp_nanos(nanos as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn unix(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        utc(y, mo, d, h, mi, s).timestamp()
    }

    #[test]
    fn known_shapes() {
        let cases: [(&str, i64); 15] = [
            (
                "081109 203615 148 INFO dfs.DataNode: x",
                unix(2008, 11, 9, 20, 36, 15),
            ),
            ("2022-01-15T14:23:47Z error", unix(2022, 1, 15, 14, 23, 47)),
            (
                "2022-01-15 14:23:47,123 INFO",
                unix(2022, 1, 15, 14, 23, 47),
            ),
            (
                "[2022-01-15 14:23:47.5] INFO",
                unix(2022, 1, 15, 14, 23, 47),
            ),
            ("2022/01/15 14:23:47 INFO", unix(2022, 1, 15, 14, 23, 47)),
            (
                "2005-06-03-15.42.50.675872 R02",
                unix(2005, 6, 3, 15, 42, 50),
            ),
            (
                "Jun 14 15:16:01 combo sshd[1]: x",
                unix(YEARLESS, 6, 14, 15, 16, 1),
            ),
            (
                "Jul  1 09:00:55 host kernel[0]: x",
                unix(YEARLESS, 7, 1, 9, 0, 55),
            ),
            (
                "[Sun Dec 04 04:47:44 2005] [notice] x",
                unix(2005, 12, 4, 4, 47, 44),
            ),
            (
                "03-17 16:13:38.811  1702  2395 D Wm: x",
                unix(YEARLESS, 3, 17, 16, 13, 38),
            ),
            ("1117838570 2005.06.03 R02-M1 RAS", 1_117_838_570),
            (
                "17/06/09 20:10:40 INFO executor.Executor: x",
                unix(2017, 6, 9, 20, 10, 40),
            ),
            (
                "I0115 14:23:47.123456   12345 main.go:42] x",
                unix(YEARLESS, 1, 15, 14, 23, 47),
            ),
            (
                "E1231 23:59:59.000001 1 x.cc:7] y",
                unix(YEARLESS, 12, 31, 23, 59, 59),
            ),
            (
                "2022-01-15T14:23:47+02:00 up",
                unix(2022, 1, 15, 12, 23, 47),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(leading_unix(line), Some(expected), "{line}");
        }
        for line in [
            "no time here",
            "134681 node-246 unix.hw",
            "081399 203615 bad month",
            "12345678901 too many digits",
            "X0115 14:23:47.123456 not a level letter",
            "I1315 14:23:47 no thirteenth month",
            "17/13/09 20:10:40 no thirteenth month",
        ] {
            assert_eq!(leading_unix(line), None, "{line}");
        }
    }

    #[test]
    fn calendar_arithmetic_matches_chrono() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2000, 3, 1),
            (1999, 12, 31),
            (2024, 2, 29),
            (2100, 3, 1),
            (1969, 7, 20),
        ] {
            let expected = NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp();
            assert_eq!(days_from_civil(y, m, d) * 86_400, expected, "{y}-{m}-{d}");
        }
        assert_eq!(
            leading_unix("2023-02-29 10:00:00 x"),
            None,
            "not a leap year"
        );
        assert_eq!(leading_unix("2024-04-31 10:00:00 x"), None);
        assert_eq!(leading_unix("2024-01-01 24:00:00 x"), None);
    }

    #[test]
    fn glog_lines_give_their_level_letter() {
        assert_eq!(glog_level(b"W0115 14:23:47.123456 1 a.go:1] x"), Some(b'W'));
        assert_eq!(glog_level(b"Warning 14:23:47 x"), None);
        assert_eq!(glog_level(b"2024-01-15 14:23:47 W x"), None);
    }

    #[test]
    fn a_glog_time_takes_the_current_year_or_the_one_before() {
        let january = utc(2025, 1, 2, 0, 0, 0);
        assert_eq!(
            leading(b"I1231 23:59:00.5 7 a.go:1] x", january),
            Some(utc(2024, 12, 31, 23, 59, 0) + chrono::Duration::milliseconds(500))
        );
    }

    #[test]
    fn fractions_and_offsets_are_kept_for_the_event_time() {
        let now = utc(2024, 6, 1, 0, 0, 0);
        let at = leading(b"2024-05-31T22:00:00.250-01:30 x", now).unwrap();
        assert_eq!(
            at,
            utc(2024, 5, 31, 23, 30, 0) + chrono::Duration::milliseconds(250)
        );
    }

    #[test]
    fn a_yearless_time_takes_the_current_year_or_the_one_before() {
        let january = utc(2025, 1, 2, 0, 0, 0);
        assert_eq!(
            leading(b"Dec 31 23:59:00 host x", january),
            Some(utc(2024, 12, 31, 23, 59, 0))
        );
        assert_eq!(
            leading(b"Jan  1 10:00:00 host x", january),
            Some(utc(2025, 1, 1, 10, 0, 0))
        );
    }

    #[test]
    fn fields_hold_epoch_numbers_or_text() {
        let now = utc(2024, 6, 1, 0, 0, 0);
        let secs = utc(2023, 11, 14, 22, 13, 20);
        for value in [
            serde_json::json!(1_700_000_000),
            serde_json::json!(1_700_000_000_000u64),
            serde_json::json!("1700000000"),
            serde_json::json!("2023-11-14T22:13:20Z"),
        ] {
            assert_eq!(from_field(&value, now), Some(secs), "{value}");
        }
        assert_eq!(from_field(&serde_json::json!(true), now), None);
        assert_eq!(from_field(&serde_json::json!("soon"), now), None);
    }
}

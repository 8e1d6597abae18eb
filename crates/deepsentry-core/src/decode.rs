//! Decoding a line into fields: JSON objects, logfmt pairs and syslog messages. The decoded
//! message becomes the event's `message`, the other values its fields, and a time field its
//! `timestamp`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::event::{Event, Value};
use crate::timestamp::{self, EventTime};

/// How a source reads each line (or joined multiline event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    /// Plain text: the line is the message (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
    /// `key=value` pairs (`level=info msg="user logged in" user=42`).
    Logfmt,
    /// A syslog message, RFC 5424 or RFC 3164, with or without its `<PRI>`.
    Syslog,
    /// A line of a Kubernetes container log file (the CRI format of containerd and CRI-O,
    /// `/var/log/containers/*.log`): `<RFC 3339 time> <stream> <P|F> <text>`. The text is the
    /// message, the time the event's and `stream` (`stdout`, `stderr`) a field. Line sources
    /// join the pieces the runtime split a long line into (`P`, partial, up to the `F` line
    /// that ends it) before anything else, and multiline joining reads the text.
    Cri,
}

/// Field names read as the message when `message_field` is not set, first present wins.
pub const MESSAGE_FIELDS: [&str; 3] = ["message", "msg", "log"];

/// Field names read as the event's time, first that parses wins.
pub const TIME_FIELDS: [&str; 4] = ["timestamp", "time", "ts", "@timestamp"];

/// What a line decoded into.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// The message, where one of the message fields held one.
    pub message: Option<String>,
    /// When the event happened, where a time field or the syslog header said.
    pub timestamp: Option<DateTime<Utc>>,
    /// Every other field (a JSON object's in key order, a logfmt line's in the line's order).
    pub fields: Vec<(String, Value)>,
}

fn json_to_value(value: serde_json::Value) -> Value {
    match value {
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => n
                .as_f64()
                .map_or(Value::Json(serde_json::Value::Number(n)), Value::Float),
        },
        other => Value::Json(other),
    }
}

/// Decodes `line`. `message_field` names the message's field (else the first of
/// [`MESSAGE_FIELDS`]); `now` places times without a year. An error says why the line is not
/// of the format.
pub fn decode(
    decoding: Decoding,
    line: &str,
    message_field: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Decoded, String> {
    let mut pairs: Vec<(String, Value)> = match decoding {
        Decoding::Text => {
            return Ok(Decoded {
                message: Some(line.to_owned()),
                ..Decoded::default()
            })
        }
        Decoding::Json => match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
            Ok(_) => return Err("not a JSON object".into()),
            Err(e) => return Err(format!("not JSON: {e}")),
        },
        Decoding::Logfmt => logfmt(line)?,
        Decoding::Syslog => return syslog_fields(line, now),
        Decoding::Cri => return cri_fields(line),
    };
    let take = |pairs: &mut Vec<(String, Value)>, name: &str| {
        let at = pairs.iter().position(|(k, _)| k == name)?;
        Some(pairs.remove(at).1)
    };
    let message = match message_field {
        Some(name) => take(&mut pairs, name),
        None => MESSAGE_FIELDS
            .iter()
            .find_map(|name| take(&mut pairs, name)),
    };
    let mut decoded = Decoded {
        message: message.map(|value| match value {
            Value::Str(text) => text,
            other => other.to_string(),
        }),
        ..Decoded::default()
    };
    for name in TIME_FIELDS {
        let Some(at) = pairs.iter().position(|(k, _)| k == name) else {
            continue;
        };
        let json = match &pairs[at].1 {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(x) => serde_json::Value::from(*x),
            _ => continue,
        };
        if let Some(time) = timestamp::from_field(&json, now) {
            decoded.timestamp = Some(time);
            // The event's own timestamp holds it now.
            pairs.remove(at);
            break;
        }
    }
    decoded.fields = pairs;
    Ok(decoded)
}

/// One line of a CRI container log file (see [`Decoding::Cri`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CriLine<'a> {
    /// When the runtime read it from the container, as written (RFC 3339; parsed where the
    /// line is decoded, not where its pieces are put together or joined).
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// The runtime split a long line here (`P`): the next line of the file goes on with it.
    pub partial: bool,
    /// Where the container's text starts in the line.
    pub text_at: usize,
}

/// Whether `time` begins as an RFC 3339 date and time does (`2024-05-31T10:00:01`).
fn looks_like_rfc3339(time: &[u8]) -> bool {
    time.len() >= 20
        && time[..19].iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T' || b == b't',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

/// Reads `line` as a line of a CRI container log file: `None` if it is not one.
pub fn cri_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = fields.next().filter(|time| looks_like_rfc3339(time))?;
    let time = std::str::from_utf8(time).ok()?;
    let stream = std::str::from_utf8(fields.next()?).ok()?;
    // `P` or `F`, possibly followed by more flags after a `:` in later versions.
    let partial = match fields.next()? {
        [b'P'] | [b'P', b':', ..] => true,
        [b'F'] | [b'F', b':', ..] => false,
        _ => return None,
    };
    if stream.is_empty() || !stream.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let text_at = line.len() - fields.next().map_or(0, <[u8]>::len);
    Some(CriLine {
        time,
        stream,
        partial,
        text_at,
    })
}

/// The text of `line` that multiline joining reads: a CRI line's container text, else the
/// whole line.
pub fn joinable_text(decoding: Decoding, line: &[u8]) -> &[u8] {
    match decoding {
        Decoding::Cri => cri_line(line).map_or(line, |cri| &line[cri.text_at..]),
        _ => line,
    }
}

fn cri_fields(line: &str) -> Result<Decoded, String> {
    let cri = cri_line(line.as_bytes())
        .ok_or("not a CRI container log line (`<RFC 3339 time> <stream> <P|F> <text>`)")?;
    let time = DateTime::parse_from_rfc3339(cri.time)
        .map_err(|e| format!("the CRI line's time `{}` is not RFC 3339: {e}", cri.time))?;
    Ok(Decoded {
        message: Some(line[cri.text_at..].to_owned()),
        timestamp: Some(time.with_timezone(&Utc)),
        fields: vec![("stream".to_owned(), Value::Str(cri.stream.to_owned()))],
    })
}

fn syslog_fields(line: &str, now: DateTime<Utc>) -> Result<Decoded, String> {
    let parsed = crate::syslog::parse(line, now).ok_or("not a syslog message")?;
    let mut fields = Vec::new();
    let mut text = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            fields.push((name.to_owned(), Value::Str(value)));
        }
    };
    text("hostname", parsed.hostname);
    text("appname", parsed.appname);
    text("procid", parsed.procid);
    text("msgid", parsed.msgid);
    text("facility", parsed.facility.map(str::to_owned));
    text("severity", parsed.severity.map(str::to_owned));
    if let Some(data) = parsed.structured_data {
        fields.push((
            "structured_data".to_owned(),
            Value::Json(serde_json::Value::Object(data)),
        ));
    }
    Ok(Decoded {
        message: Some(parsed.message),
        timestamp: parsed.timestamp,
        fields,
    })
}

/// Splits a logfmt line into pairs. A bare key is `true`; a quoted value may hold spaces and
/// `\"`. A line with no `key=value` pair at all is not logfmt.
fn logfmt(line: &str) -> Result<Vec<(String, Value)>, String> {
    let mut pairs = Vec::new();
    let mut with_value = 0;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            if i < bytes.len() && bytes[i] == b'=' {
                return Err(format!("a value without a key at byte {i}"));
            }
            continue;
        }
        let key = line[start..i].to_owned();
        if i >= bytes.len() || bytes[i] != b'=' {
            pairs.push((key, Value::Bool(true)));
            continue;
        }
        i += 1;
        with_value += 1;
        let value: Cow<str> = if bytes.get(i) == Some(&b'"') {
            let mut value = String::new();
            i += 1;
            let mut closed = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    b'\\' if i + 1 < bytes.len() => {
                        let next = line[i + 1..].chars().next().unwrap_or('\\');
                        match next {
                            'n' => value.push('\n'),
                            't' => value.push('\t'),
                            other => value.push(other),
                        }
                        i += 1 + next.len_utf8();
                    }
                    _ => {
                        let c = line[i..].chars().next().unwrap_or('?');
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            if !closed {
                return Err(format!("the quoted value of `{key}` is not closed"));
            }
            Cow::Owned(value)
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            Cow::Borrowed(&line[start..i])
        };
        pairs.push((key, Value::Str(value.into_owned())));
    }
    if with_value == 0 {
        return Err("no key=value pair".into());
    }
    Ok(pairs)
}

/// Decodes `event`'s message in place: its message, fields and time become what the text
/// decoded into (see [`decode`]; `now` places times without a year). Returns whether the
/// event got its time from the text; an error says why the text is not of the format, the
/// event left as it was.
pub fn decode_event(
    event: &mut Event,
    decoding: Decoding,
    message_field: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, String> {
    if decoding == Decoding::Text {
        return Ok(false);
    }
    let decoded = decode(decoding, event.message(), message_field, now)?;
    let dated = decoded.timestamp.is_some();
    apply(event, decoded);
    Ok(dated)
}

/// Decodes `event` in place (see [`decode_event`]) and dates it as `time` says: with
/// [`EventTime::Auto`], a decoded time, else a timestamp leading its message, else
/// `received`; with [`EventTime::Arrival`], `received`. An error says why the text did not
/// decode (the event is then dated from its text as it is).
pub fn decode_and_date(
    event: &mut Event,
    decoding: Decoding,
    message_field: Option<&str>,
    time: EventTime,
    received: DateTime<Utc>,
) -> Result<(), String> {
    let decoded = decode_event(event, decoding, message_field, received);
    match time {
        EventTime::Arrival => event.timestamp = received,
        EventTime::Auto if decoded == Ok(true) => {}
        EventTime::Auto => {
            if let Some(at) = timestamp::leading(event.message_bytes(), received) {
                event.timestamp = at;
            }
        }
    }
    decoded.map(drop)
}

/// Puts what `line` decoded into on `event`: its message, its fields and its time.
pub fn apply(event: &mut Event, decoded: Decoded) {
    if let Some(message) = decoded.message {
        event.set_message(message);
    }
    if let Some(at) = decoded.timestamp {
        event.timestamp = at;
    }
    for (key, value) in decoded.fields {
        event.fields.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn cri_lines_give_their_text_time_and_stream() {
        let d = decode(
            Decoding::Cri,
            r#"2024-05-31T10:00:01.123456789Z stderr F {"level":"error","msg":"x"}"#,
            None,
            now(),
        )
        .unwrap();
        assert_eq!(d.message.as_deref(), Some(r#"{"level":"error","msg":"x"}"#));
        assert_eq!(
            d.timestamp,
            Some(
                Utc.with_ymd_and_hms(2024, 5, 31, 10, 0, 1).unwrap()
                    + chrono::Duration::nanoseconds(123_456_789)
            )
        );
        assert_eq!(
            d.fields,
            [("stream".to_owned(), Value::Str("stderr".into()))]
        );
        let partial = cri_line(b"2024-05-31T12:00:01+02:00 stdout P part one ").unwrap();
        assert!(partial.partial);
        assert_eq!(partial.text_at, 35);
        // An empty line is a line.
        let empty = decode(Decoding::Cri, "2024-05-31T10:00:01Z stdout F ", None, now()).unwrap();
        assert_eq!(empty.message.as_deref(), Some(""));
        for bad in [
            "plain text",
            "2024-05-31T10:00:01Z stdout X text",
            "yesterday stdout F text",
            "2024-05-31T10:00:01Z std/out F text",
        ] {
            assert!(decode(Decoding::Cri, bad, None, now()).is_err(), "{bad}");
        }
        assert_eq!(
            joinable_text(
                Decoding::Cri,
                b"2024-05-31T10:00:01Z stdout F    at x.y(Z.java:1)"
            ),
            b"   at x.y(Z.java:1)"
        );
        assert_eq!(joinable_text(Decoding::Text, b"a b"), b"a b");
    }

    #[test]
    fn json_message_level_and_time() {
        let d = decode(
            Decoding::Json,
            r#"{"time":"2024-05-31T10:00:00Z","level":"error","msg":"db down","retries":3,"ctx":{"a":1}}"#,
            None,
            now(),
        )
        .unwrap();
        assert_eq!(d.message.as_deref(), Some("db down"));
        assert_eq!(
            d.timestamp,
            Some(Utc.with_ymd_and_hms(2024, 5, 31, 10, 0, 0).unwrap())
        );
        assert_eq!(
            d.fields,
            vec![
                ("ctx".to_owned(), Value::Json(serde_json::json!({"a": 1}))),
                ("level".to_owned(), Value::Str("error".into())),
                ("retries".to_owned(), Value::Int(3)),
            ]
        );
        let named = decode(
            Decoding::Json,
            r#"{"text":"x","msg":"y"}"#,
            Some("text"),
            now(),
        );
        assert_eq!(named.unwrap().message.as_deref(), Some("x"));
        assert!(decode(Decoding::Json, "{not json", None, now()).is_err());
        assert!(decode(Decoding::Json, "[1,2]", None, now()).is_err());
    }

    #[test]
    fn logfmt_pairs() {
        let d = decode(
            Decoding::Logfmt,
            r#"ts=1700000000 level=warn msg="cache \"hot\" miss" key=a=b flag"#,
            None,
            now(),
        )
        .unwrap();
        assert_eq!(d.message.as_deref(), Some("cache \"hot\" miss"));
        assert_eq!(d.timestamp.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(
            d.fields,
            vec![
                ("level".to_owned(), Value::Str("warn".into())),
                ("key".to_owned(), Value::Str("a=b".into())),
                ("flag".to_owned(), Value::Bool(true)),
            ]
        );
        assert!(decode(Decoding::Logfmt, "just words here", None, now()).is_err());
        assert!(decode(Decoding::Logfmt, r#"msg="open"#, None, now()).is_err());
    }

    #[test]
    fn syslog_fields_and_message() {
        let d = decode(
            Decoding::Syslog,
            "<11>Oct 11 22:14:15 web nginx[9]: upstream timed out",
            None,
            now(),
        )
        .unwrap();
        assert_eq!(d.message.as_deref(), Some("upstream timed out"));
        assert!(d
            .fields
            .contains(&("severity".to_owned(), Value::Str("err".into()))));
        assert!(d
            .fields
            .contains(&("appname".to_owned(), Value::Str("nginx".into()))));
        assert!(decode(Decoding::Syslog, "plain", None, now()).is_err());
    }

    #[test]
    fn applying_sets_the_event() {
        let mut event = Event::from_str("{}", now(), crate::Origin::new("s", "s"));
        let at = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        apply(
            &mut event,
            Decoded {
                message: Some("hello".into()),
                timestamp: Some(at),
                fields: vec![("level".into(), Value::Str("info".into()))],
            },
        );
        assert_eq!(event.message(), "hello");
        assert_eq!(event.timestamp, at);
        assert_eq!(event.fields.get("level"), Some(&Value::Str("info".into())));
    }
}

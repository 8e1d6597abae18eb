//! From a request body to messages: gunzipped within the size limit, split into lines (or the
//! elements of a JSON array), each cut to `max_line_bytes`, and checked to decode before any
//! of them is sent, so a request is taken whole or refused whole.

use std::io::Read;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deepsentry_core::decode::{decode, Decoding};

/// One event's text from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// Which line (or array element) of the body it is, counting from 1: what a refusal names.
    pub(crate) number: usize,
    /// The text, at most `max_line_bytes` long.
    pub(crate) text: Bytes,
    /// Whether the text was cut to `max_line_bytes`.
    pub(crate) truncated: bool,
}

/// The messages of one request body.
#[derive(Debug)]
pub(crate) struct Split {
    /// In body order; empty lines are not messages.
    pub(crate) messages: Vec<Message>,
    /// `line` or `element`: how a refusal names a message.
    pub(crate) unit: &'static str,
}

/// Why a gzip body was not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GunzipError {
    /// It inflates past the limit: a gzip bomb, or simply too much in one request.
    TooLarge,
    /// It is not gzip, or it is cut short.
    Corrupt(String),
}

/// Inflates a gzip body (one or several concatenated members), stopping as soon as it passes
/// `max` bytes: a small body that would inflate to gigabytes costs no more than `max`.
pub(crate) fn gunzip(body: &[u8], max: usize) -> Result<Bytes, GunzipError> {
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    let mut inflated = Vec::new();
    // One byte past the limit tells "at the limit" from "over it" without inflating the rest.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut inflated)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if inflated.len() > max {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(inflated))
}

/// Splits `body` into messages. With `json` decoding, a body whose first non-blank byte is
/// `[` is one JSON array, each element a message; any other body (and every body with another
/// decoding) is newline-delimited, one message per non-empty line. An error says why the body
/// is not a JSON array.
pub(crate) fn split_body(
    body: &Bytes,
    decoding: Decoding,
    max_line: usize,
) -> Result<Split, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if decoding == Decoding::Json && first == Some(&b'[') {
        Ok(Split {
            messages: split_array(body, max_line)?,
            unit: "element",
        })
    } else {
        Ok(Split {
            messages: split_lines(body, max_line),
            unit: "line",
        })
    }
}

/// One message per line: a trailing `\r` is removed, empty lines are skipped (a body ending in
/// a newline, or NDJSON with blank lines between records), and a last line without a newline
/// counts like any other.
pub(crate) fn split_lines(body: &Bytes, max_line: usize) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut start = 0;
    let mut number = 0;
    while start < body.len() {
        number += 1;
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |at| start + at);
        let mut line_end = end;
        if line_end > start && body[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        if line_end > start {
            messages.push(cut(number, body.slice(start..line_end), max_line));
        }
        start = end + 1;
    }
    messages
}

/// One message per element of a JSON array, each written back as compact JSON so the
/// decoder reads it like an NDJSON line.
fn split_array(body: &[u8], max_line: usize) -> Result<Vec<Message>, String> {
    let elements: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| format!("the body starts with `[` but is not a JSON array: {e}"))?;
    Ok(elements
        .into_iter()
        .enumerate()
        .map(|(i, element)| cut(i + 1, Bytes::from(element.to_string()), max_line))
        .collect())
}

/// A message of `text`, cut to `max` bytes (the rest dropped, as the line sources do).
fn cut(number: usize, text: Bytes, max: usize) -> Message {
    let truncated = text.len() > max;
    let text = if truncated { text.slice(..max) } else { text };
    Message {
        number,
        text,
        truncated,
    }
}

/// Checks that every message decodes as `decoding` says (text always does), so that a request
/// with one bad record is refused before any of its events is sent. The error names the first
/// message that does not decode, and why.
pub(crate) fn validate(
    split: &Split,
    decoding: Decoding,
    message_field: Option<&str>,
    max_line: usize,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if decoding == Decoding::Text {
        return Ok(());
    }
    for message in &split.messages {
        let text = String::from_utf8_lossy(&message.text);
        if let Err(why) = decode(decoding, &text, message_field, now) {
            let cut = if message.truncated {
                format!(" (it is longer than max_line_bytes, {max_line} bytes, and was cut)")
            } else {
                String::new()
            };
            return Err(format!("{} {}: {why}{cut}", split.unit, message.number));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn texts(messages: &[Message]) -> Vec<&str> {
        messages
            .iter()
            .map(|m| std::str::from_utf8(&m.text).unwrap())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn lines_drop_carriage_returns_and_empty_lines_and_keep_their_numbers() {
        let body = Bytes::from_static(b"first\r\n\nsecond\n\r\nthird");
        let messages = split_lines(&body, 100);
        assert_eq!(texts(&messages), ["first", "second", "third"]);
        let numbers: Vec<usize> = messages.iter().map(|m| m.number).collect();
        assert_eq!(numbers, [1, 3, 5]);
        assert!(messages.iter().all(|m| !m.truncated));
        assert!(split_lines(&Bytes::new(), 100).is_empty());
        assert!(split_lines(&Bytes::from_static(b"\n\r\n\n"), 100).is_empty());
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let body = Bytes::from_static(b"short\n0123456789abcdef\n");
        let messages = split_lines(&body, 10);
        assert_eq!(texts(&messages), ["short", "0123456789"]);
        assert_eq!(
            messages.iter().map(|m| m.truncated).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn a_json_array_gives_one_message_per_element() {
        let body =
            Bytes::from_static(b"  \n[{\"message\":\"a\",\"n\":1},\n {\"message\":\"b\"}]\n");
        let split = split_body(&body, Decoding::Json, 1000).unwrap();
        assert_eq!(split.unit, "element");
        assert_eq!(
            texts(&split.messages),
            [r#"{"message":"a","n":1}"#, r#"{"message":"b"}"#]
        );
        assert_eq!(split.messages[1].number, 2);
        validate(&split, Decoding::Json, None, 1000, Utc::now()).unwrap();

        let err =
            split_body(&Bytes::from_static(b"[{\"a\":1},"), Decoding::Json, 1000).unwrap_err();
        assert!(err.contains("not a JSON array"), "{err}");
    }

    #[test]
    fn an_array_is_only_an_array_with_json_decoding() {
        let body = Bytes::from_static(b"[not json] just text\nmore\n");
        let split = split_body(&body, Decoding::Text, 1000).unwrap();
        assert_eq!(split.unit, "line");
        assert_eq!(texts(&split.messages), ["[not json] just text", "more"]);
        validate(&split, Decoding::Text, None, 1000, Utc::now()).unwrap();
    }

    #[test]
    fn ndjson_is_split_on_newlines_and_every_line_must_be_an_object() {
        let body = Bytes::from_static(b"{\"message\":\"a\"}\r\n\n{\"message\":\"b\"}\n");
        let split = split_body(&body, Decoding::Json, 1000).unwrap();
        assert_eq!(split.unit, "line");
        assert_eq!(split.messages.len(), 2);
        validate(&split, Decoding::Json, None, 1000, Utc::now()).unwrap();

        let body = Bytes::from_static(b"{\"message\":\"a\"}\n\nnot json\n{\"message\":\"b\"}\n");
        let split = split_body(&body, Decoding::Json, 1000).unwrap();
        let err = validate(&split, Decoding::Json, None, 1000, Utc::now()).unwrap_err();
        assert!(err.starts_with("line 3: not JSON"), "{err}");

        let body = Bytes::from_static(b"[{\"message\":\"a\"}, 42]");
        let split = split_body(&body, Decoding::Json, 1000).unwrap();
        let err = validate(&split, Decoding::Json, None, 1000, Utc::now()).unwrap_err();
        assert_eq!(err, "element 2: not a JSON object");
    }

    #[test]
    fn a_record_cut_to_max_line_bytes_says_so_when_it_no_longer_decodes() {
        let body = Bytes::from_static(b"{\"message\":\"a long message\"}\n");
        let split = split_body(&body, Decoding::Json, 10).unwrap();
        let err = validate(&split, Decoding::Json, None, 10, Utc::now()).unwrap_err();
        assert!(err.starts_with("line 1: not JSON"), "{err}");
        assert!(err.contains("max_line_bytes, 10 bytes"), "{err}");
    }

    #[test]
    fn gzip_is_inflated_within_the_limit() {
        let text = b"line one\nline two\n";
        assert_eq!(gunzip(&gzip(text), 1000).unwrap(), &text[..]);
        // Exactly at the limit is fine; one byte over is not.
        assert_eq!(gunzip(&gzip(text), text.len()).unwrap().len(), text.len());
        assert_eq!(
            gunzip(&gzip(text), text.len() - 1),
            Err(GunzipError::TooLarge)
        );
        // Concatenated members (what `cat a.gz b.gz` gives) are one body.
        let mut two = gzip(b"a\n");
        two.extend(gzip(b"b\n"));
        assert_eq!(gunzip(&two, 1000).unwrap(), &b"a\nb\n"[..]);
        assert_eq!(gunzip(b"", 1000).unwrap(), Bytes::new());
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b'0'; 20_000_000]);
        assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
        assert_eq!(gunzip(&bomb, 1_000_000), Err(GunzipError::TooLarge));
    }

    #[test]
    fn a_body_that_is_not_gzip_is_corrupt() {
        assert!(matches!(
            gunzip(b"plain text, not gzip", 1000),
            Err(GunzipError::Corrupt(_))
        ));
        let mut cut_short = gzip(&vec![b'x'; 10_000]);
        cut_short.truncate(cut_short.len() / 2);
        assert!(matches!(
            gunzip(&cut_short, 1_000_000),
            Err(GunzipError::Corrupt(_))
        ));
    }
}

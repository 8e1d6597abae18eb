//! The unit of data: one log line with where it came from and what transforms learned about it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// Where a group of events came from; shared by every event of one stream, so it costs one
/// reference count per event rather than an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The id of the source component in the pipeline config.
    pub source: Arc<str>,
    /// The stream inside that source: a file path, a peer address, `stdin`.
    pub stream: Arc<str>,
}

impl Origin {
    /// An origin for `source` and one of its streams.
    pub fn new(source: impl Into<Arc<str>>, stream: impl Into<Arc<str>>) -> Arc<Self> {
        Arc::new(Self {
            source: source.into(),
            stream: stream.into(),
        })
    }
}

/// A value a transform attaches to an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A floating-point number (scores, thresholds).
    Float(f64),
    /// An integer.
    Int(i64),
    /// A flag (`is_anomaly`).
    Bool(bool),
    /// A structured value (a list or an object), such as the detector's `expected`
    /// templates; JSON outputs write it as JSON, text outputs as compact JSON text.
    Json(serde_json::Value),
}

impl Value {
    /// The number it holds, if it holds one (a score, a threshold, a count).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(x) => Some(*x),
            Value::Int(x) => Some(*x as f64),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Float(x) => write!(f, "{x}"),
            Value::Int(x) => write!(f, "{x}"),
            Value::Bool(x) => write!(f, "{x}"),
            Value::Json(x) => write!(f, "{x}"),
        }
    }
}

/// Named values added to an event, in insertion order. Empty (and allocation-free) until a
/// transform adds something.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(Cow<'static, str>, Value)>);

impl Fields {
    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Makes room for `additional` more fields.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    /// The number `key` holds, if it is set to one.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every field in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One log line flowing through a pipeline.
#[derive(Debug, Clone)]
pub struct Event {
    /// The raw line without its line ending. Always valid UTF-8 (checked on construction), kept
    /// as `Bytes` so that a line read from a buffer is a slice of it, not a copy.
    message: Bytes,
    /// When the line entered the pipeline.
    pub timestamp: DateTime<Utc>,
    /// Which source and stream it came from.
    pub origin: Arc<Origin>,
    /// Values added by transforms.
    pub fields: Fields,
}

impl Event {
    /// An event from raw line bytes. Invalid UTF-8 is replaced lossily (U+FFFD); the returned
    /// flag says whether that happened, so the source can count it.
    pub fn from_bytes(line: Bytes, timestamp: DateTime<Utc>, origin: Arc<Origin>) -> (Self, bool) {
        let (message, lossy) = match std::str::from_utf8(&line) {
            Ok(_) => (line, false),
            Err(_) => (
                Bytes::from(String::from_utf8_lossy(&line).into_owned()),
                true,
            ),
        };
        (
            Event {
                message,
                timestamp,
                origin,
                fields: Fields::default(),
            },
            lossy,
        )
    }

    /// An event from a message that is already text.
    pub fn from_str(message: &str, timestamp: DateTime<Utc>, origin: Arc<Origin>) -> Self {
        Event {
            message: Bytes::copy_from_slice(message.as_bytes()),
            timestamp,
            origin,
            fields: Fields::default(),
        }
    }

    /// The line's text.
    pub fn message(&self) -> &str {
        // SAFETY: every constructor validates or converts the bytes to UTF-8 and the field is
        // private, so it is never anything else.
        unsafe { std::str::from_utf8_unchecked(&self.message) }
    }

    /// The line's bytes (valid UTF-8).
    pub fn message_bytes(&self) -> &[u8] {
        &self.message
    }

    /// Whether the anomaly detector flagged the event (`is_anomaly: true`); false when it was
    /// not scored.
    pub fn is_anomaly(&self) -> bool {
        self.fields.get(crate::anomaly::IS_ANOMALY) == Some(&Value::Bool(true))
    }

    /// Replaces the message text.
    pub fn set_message(&mut self, message: String) {
        self.message = Bytes::from(message);
    }

    /// Runs `read` on the text of `field`: `message`, `source` and `stream` (the origin), or a
    /// field set by a source or transform; `None` when the event has no such field. Text is
    /// read in place; numbers and flags are formatted first.
    pub fn with_field_text<R>(&self, field: &str, read: impl FnOnce(&str) -> R) -> Option<R> {
        match field {
            "message" => return Some(read(self.message())),
            "source" => return Some(read(&self.origin.source)),
            "stream" => return Some(read(&self.origin.stream)),
            _ => {}
        }
        Some(match self.fields.get(field)? {
            Value::Str(text) => read(text),
            other => read(&other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        let origin = Origin::new("in", "stdin");
        let (event, lossy) =
            Event::from_bytes(Bytes::from_static(b"ok \xff end"), Utc::now(), origin);
        assert!(lossy);
        assert_eq!(event.message(), "ok \u{fffd} end");
    }

    #[test]
    fn valid_utf8_is_kept_as_is() {
        let origin = Origin::new("in", "stdin");
        let (event, lossy) =
            Event::from_bytes(Bytes::from_static("héllo".as_bytes()), Utc::now(), origin);
        assert!(!lossy);
        assert_eq!(event.message(), "héllo");
    }

    #[test]
    fn fields_replace_by_key() {
        let mut fields = Fields::default();
        fields.insert("score", Value::Float(1.0));
        fields.insert("score", Value::Float(2.0));
        assert_eq!(fields.get("score"), Some(&Value::Float(2.0)));
        assert_eq!(fields.iter().count(), 1);
    }
}

//! Turning events into bytes for text outputs (console, files, sockets).

use std::io::Write;

use chrono::SecondsFormat;
use serde::ser::{SerializeMap, Serializer};

use crate::anomaly;
use crate::batch::Batch;
use crate::event::{Event, Value};

/// How an event is written as bytes: the value of every sink's `encoding` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `text`: the raw message, one per line.
    Text,
    /// `json`: one JSON object per line: timestamp, message, source, stream and every field.
    Json,
    /// `json_array`: the JSON objects of a batch in one array, for sinks that send batches
    /// (the webhook's request body); [`encode`] writes one event as [`Encoding::Json`] does.
    JsonArray,
    /// `monitor`: the live monitor's console line,
    /// `[14:23:46] ANOMALY - score: 3.67 (threshold: 2.45) - "Unexpected error" ⚠️`.
    /// `deepsentry`, its former name, is still read.
    Monitor,
    /// `alert`: the alert file's block (`TIMESTAMP=`, `SCORE=`, `THRESHOLD=`, `MESSAGE=`,
    /// `CONTEXT_WINDOW=`), written for anomalies only.
    Alert,
}

impl Encoding {
    /// Every encoding, in the order the documentation lists them.
    pub const ALL: [Encoding; 5] = [
        Encoding::Text,
        Encoding::Json,
        Encoding::JsonArray,
        Encoding::Monitor,
        Encoding::Alert,
    ];

    /// Its name in a configuration.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Text => "text",
            Encoding::Json => "json",
            Encoding::JsonArray => "json_array",
            Encoding::Monitor => "monitor",
            Encoding::Alert => "alert",
        }
    }

    /// The encoding a configuration names, former names included.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "deepsentry" => Some(Encoding::Monitor),
            _ => Self::ALL.into_iter().find(|e| e.name() == name),
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The encodings a sink writes, and the one it uses when its configuration names none. Each
/// sink declares its own (a unit type implementing this) and takes an
/// [`EncodingConfig`] of it as its `encoding` key.
pub trait SinkEncodings {
    /// What the sink can write, in the order its error messages list them.
    const SUPPORTED: &'static [Encoding];
    /// What it writes when `encoding` is not set.
    const DEFAULT: Encoding;
}

/// A sink's `encoding` setting: an [`Encoding`] that sink `S` supports. An encoding it does
/// not support is a configuration error at the key, listing the valid ones.
pub struct EncodingConfig<S> {
    encoding: Encoding,
    sink: std::marker::PhantomData<fn() -> S>,
}

impl<S> EncodingConfig<S> {
    /// The encoding chosen.
    pub fn get(&self) -> Encoding {
        self.encoding
    }
}

impl<S: SinkEncodings> EncodingConfig<S> {
    /// `encoding`, if `S` supports it.
    pub fn new(encoding: Encoding) -> Result<Self, String> {
        if S::SUPPORTED.contains(&encoding) {
            Ok(Self {
                encoding,
                sink: std::marker::PhantomData,
            })
        } else {
            Err(format!(
                "this sink does not write `{encoding}`; expected one of {}",
                Self::choices()
            ))
        }
    }

    fn choices() -> String {
        S::SUPPORTED
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl<S: SinkEncodings> Default for EncodingConfig<S> {
    fn default() -> Self {
        Self {
            encoding: S::DEFAULT,
            sink: std::marker::PhantomData,
        }
    }
}

impl<S> Clone for EncodingConfig<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for EncodingConfig<S> {}

impl<S> PartialEq for EncodingConfig<S> {
    fn eq(&self, other: &Self) -> bool {
        self.encoding == other.encoding
    }
}

impl<S> std::fmt::Debug for EncodingConfig<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodingConfig({})", self.encoding)
    }
}

impl<'de, S: SinkEncodings> serde::Deserialize<'de> for EncodingConfig<S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match Encoding::from_name(&name) {
            Some(encoding) => Self::new(encoding).map_err(serde::de::Error::custom),
            // Worded as serde words an unknown variant, so the loader shows it the same way.
            None => Err(serde::de::Error::custom(format!(
                "unknown variant `{name}`, expected one of {}",
                Self::choices()
            ))),
        }
    }
}

/// Appends `event` encoded as `encoding` to `out`, newline-terminated. Returns `false` (and
/// writes nothing) when the encoding skips this event: [`Encoding::Alert`] for an event not
/// flagged as an anomaly.
pub fn encode(encoding: Encoding, event: &Event, out: &mut Vec<u8>) -> bool {
    match encoding {
        Encoding::Text => {
            out.extend_from_slice(event.message_bytes());
            out.push(b'\n');
        }
        Encoding::Json | Encoding::JsonArray => {
            encode_json(event, out);
            out.push(b'\n');
        }
        Encoding::Monitor => encode_console(event, out),
        Encoding::Alert => return encode_alert(event, out),
    }
    true
}

/// Appends every event of `batch` to `out`; returns how many were written (an encoding may
/// skip some, see [`encode`]).
pub fn encode_batch(encoding: Encoding, batch: &Batch, out: &mut Vec<u8>) -> usize {
    batch
        .events
        .iter()
        .filter(|event| encode(encoding, event, out))
        .count()
}

fn is_anomaly(event: &Event) -> bool {
    matches!(
        event.fields.get(anomaly::IS_ANOMALY),
        Some(Value::Bool(true))
    )
}

fn encode_console(event: &Event, out: &mut Vec<u8>) {
    let time = event.timestamp.format("%H:%M:%S");
    let _ = match (
        event.fields.number(anomaly::ANOMALY_SCORE),
        event.fields.number(anomaly::ANOMALY_THRESHOLD),
    ) {
        (Some(score), Some(threshold)) => {
            let anomaly = is_anomaly(event);
            // A later member of an alert group says how many the group holds so far.
            let repeats = match event.fields.get(anomaly::ALERT_COUNT) {
                Some(Value::Int(n)) if anomaly && *n > 1 => format!(" (x{n})"),
                _ => String::new(),
            };
            writeln!(
                out,
                "[{time}] {} - score: {score:.2} (threshold: {threshold:.2}) - \"{}\"{}{repeats}",
                if anomaly { "ANOMALY" } else { "Normal" },
                event.message(),
                if anomaly { " ⚠️" } else { "" },
            )
        }
        _ => writeln!(out, "[{time}] {}", event.message()),
    };
}

/// Quotes `text` for a `KEY="value"` line: backslash, quote and line breaks escaped, so each
/// value stays on one line and can be parsed back.
fn write_quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn encode_alert(event: &Event, out: &mut Vec<u8>) -> bool {
    if !is_anomaly(event) {
        return false;
    }
    let _ = writeln!(
        out,
        "TIMESTAMP={}",
        event.timestamp.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let score = event
        .fields
        .number(anomaly::ANOMALY_SCORE)
        .unwrap_or(f64::NAN);
    let threshold = event
        .fields
        .number(anomaly::ANOMALY_THRESHOLD)
        .unwrap_or(f64::NAN);
    let _ = writeln!(out, "SCORE={score:.2}\nTHRESHOLD={threshold:.2}");
    out.extend_from_slice(b"MESSAGE=");
    write_quoted(out, event.message());
    out.extend_from_slice(b"\nCONTEXT_WINDOW=");
    let context = match event.fields.get(anomaly::CONTEXT_WINDOW) {
        Some(Value::Str(s)) => s.as_str(),
        _ => "",
    };
    write_quoted(out, context);
    out.extend_from_slice(b"\n\n");
    true
}

struct JsonValue<'a>(&'a Value);

impl serde::Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Str(v) => s.serialize_str(v),
            Value::Float(v) => s.serialize_f64(*v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Json(v) => serde::Serialize::serialize(v, s),
        }
    }
}

struct JsonEvent<'a>(&'a Event);

impl serde::Serialize for JsonEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(
            "timestamp",
            &event.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
        )?;
        map.serialize_entry("message", event.message())?;
        map.serialize_entry("source", &*event.origin.source)?;
        map.serialize_entry("stream", &*event.origin.stream)?;
        for (key, value) in event.fields.iter() {
            map.serialize_entry(key, &JsonValue(value))?;
        }
        map.end()
    }
}

fn encode_json(event: &Event, out: &mut Vec<u8>) {
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &JsonEvent(event));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use chrono::TimeZone;

    fn scored(message: &str, score: f64, anomaly: bool) -> Event {
        let ts = chrono::Utc
            .with_ymd_and_hms(2022, 1, 15, 14, 23, 47)
            .unwrap();
        let mut event = Event::from_str(message, ts, Origin::new("in", "app.log"));
        event
            .fields
            .insert(anomaly::ANOMALY_SCORE, Value::Float(score));
        event
            .fields
            .insert(anomaly::ANOMALY_THRESHOLD, Value::Float(2.45));
        event
            .fields
            .insert(anomaly::IS_ANOMALY, Value::Bool(anomaly));
        event.fields.insert(
            anomaly::CONTEXT_WINDOW,
            Value::Str("Verification complete → Unexpected error".into()),
        );
        event
    }

    fn encoded(encoding: Encoding, event: &Event) -> String {
        let mut out = Vec::new();
        encode(encoding, event, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn console_line_matches_the_live_monitor_format() {
        assert_eq!(
            encoded(Encoding::Monitor, &scored("Unexpected error", 3.67, true)),
            "[14:23:47] ANOMALY - score: 3.67 (threshold: 2.45) - \"Unexpected error\" ⚠️\n"
        );
        assert_eq!(
            encoded(Encoding::Monitor, &scored("Got block report", 0.21, false)),
            "[14:23:47] Normal - score: 0.21 (threshold: 2.45) - \"Got block report\"\n"
        );
    }

    #[test]
    fn a_later_member_of_an_alert_group_shows_its_count() {
        let mut event = scored("Disk failed", 9.5, true);
        event.fields.insert(anomaly::ALERT_COUNT, Value::Int(1));
        assert!(encoded(Encoding::Monitor, &event).ends_with("\"Disk failed\" ⚠️\n"));
        event.fields.insert(anomaly::ALERT_COUNT, Value::Int(4));
        assert_eq!(
            encoded(Encoding::Monitor, &event),
            "[14:23:47] ANOMALY - score: 9.50 (threshold: 2.45) - \"Disk failed\" ⚠️ (x4)\n"
        );
        // JSON writes structured values as JSON.
        event.fields.insert(
            anomaly::EXPECTED,
            Value::Json(serde_json::json!([{"template": "a", "p": 0.5}])),
        );
        let json: serde_json::Value =
            serde_json::from_str(&encoded(Encoding::Json, &event)).unwrap();
        assert_eq!(json["expected"][0]["p"], 0.5);
        assert_eq!(json["alert_count"], 4);
    }

    #[test]
    fn alert_block_only_for_anomalies_and_quoted() {
        assert_eq!(
            encoded(
                Encoding::Alert,
                &scored("Unexpected \"db\" error", 3.67, true)
            ),
            "TIMESTAMP=2022-01-15T14:23:47Z\nSCORE=3.67\nTHRESHOLD=2.45\n\
             MESSAGE=\"Unexpected \\\"db\\\" error\"\n\
             CONTEXT_WINDOW=\"Verification complete → Unexpected error\"\n\n"
        );
        let mut out = Vec::new();
        assert!(!encode(
            Encoding::Alert,
            &scored("fine", 0.1, false),
            &mut out
        ));
        assert!(out.is_empty());
    }

    struct LineSink;

    impl SinkEncodings for LineSink {
        const SUPPORTED: &'static [Encoding] = &[Encoding::Monitor, Encoding::Json];
        const DEFAULT: Encoding = Encoding::Monitor;
    }

    #[derive(Debug, serde::Deserialize)]
    struct LineSinkConfig {
        #[serde(default)]
        encoding: EncodingConfig<LineSink>,
    }

    fn line_sink(yaml: &str) -> Result<Encoding, String> {
        serde_yaml::from_str::<LineSinkConfig>(yaml)
            .map(|c| c.encoding.get())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_sink_reads_the_encodings_it_supports_and_names_them_otherwise() {
        assert_eq!(line_sink("{}"), Ok(Encoding::Monitor));
        assert_eq!(line_sink("encoding: json"), Ok(Encoding::Json));
        assert_eq!(line_sink("encoding: deepsentry"), Ok(Encoding::Monitor));
        let unsupported = line_sink("encoding: alert").unwrap_err();
        assert!(
            unsupported.contains("does not write `alert`; expected one of `monitor`, `json`"),
            "{unsupported}"
        );
        let unknown = line_sink("encoding: xml").unwrap_err();
        assert!(
            unknown.contains("unknown variant `xml`, expected one of `monitor`, `json`"),
            "{unknown}"
        );
        for encoding in Encoding::ALL {
            assert_eq!(Encoding::from_name(encoding.name()), Some(encoding));
        }
    }

    #[test]
    fn json_has_message_origin_and_fields() {
        let line = encoded(Encoding::Json, &scored("a \"quoted\" line", 0.5, false));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["message"], "a \"quoted\" line");
        assert_eq!(value["source"], "in");
        assert_eq!(value["stream"], "app.log");
        assert_eq!(value["anomaly_score"], 0.5);
        assert_eq!(value["is_anomaly"], false);
        assert_eq!(value["timestamp"], "2022-01-15T14:23:47.000000Z");
    }
}

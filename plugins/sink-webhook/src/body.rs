//! Request bodies: events encoded as `json`, `json_array`, `monitor` or `text`.

use deepsentry_core::codec::{self, Encoding, SinkEncodings};
use deepsentry_core::Event;

/// What a request's body holds:
/// - `json` (the default): a JSON object per event; by default one event per request, the
///   body being that object; with `max_events` above 1, newline-delimited objects;
/// - `json_array`: a JSON array of the events of a batch (100 by default);
/// - `monitor`: the live monitor's line,
///   `[14:23:46] ANOMALY - score: 3.67 (threshold: 2.45) - "..."`, what the
///   `curl -d "$line"` recipe posts: by default one line per request; with `max_events`
///   above 1, one line per event;
/// - `text`: the raw log line, one per event in the same way.
pub struct WebhookEncodings;

impl SinkEncodings for WebhookEncodings {
    const SUPPORTED: &'static [Encoding] = &[
        Encoding::Json,
        Encoding::JsonArray,
        Encoding::Monitor,
        Encoding::Text,
    ];
    const DEFAULT: Encoding = Encoding::Json;
}

/// How many events a request holds unless `max_events` says otherwise.
pub fn default_max_events(encoding: Encoding) -> usize {
    match encoding {
        Encoding::JsonArray => 100,
        _ => 1,
    }
}

/// The `Content-Type` of a body in `encoding` that may hold up to `max_events` events.
pub fn content_type(encoding: Encoding, max_events: usize) -> &'static str {
    match encoding {
        Encoding::Json if max_events > 1 => "application/x-ndjson",
        Encoding::Json | Encoding::JsonArray => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// A request body being filled, one event at a time.
#[derive(Debug)]
pub struct Body {
    encoding: Encoding,
    bytes: Vec<u8>,
    events: usize,
}

impl Body {
    /// An empty body.
    pub fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            bytes: Vec::new(),
            events: 0,
        }
    }

    /// Number of events in the body.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Size of the body so far, in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no event was added.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Adds `event`.
    pub fn push(&mut self, event: &Event) {
        let separator = match self.encoding {
            Encoding::JsonArray => b',',
            _ => b'\n',
        };
        if self.events > 0 {
            self.bytes.push(separator);
        } else if self.encoding == Encoding::JsonArray {
            self.bytes.push(b'[');
        }
        codec::encode(self.encoding, event, &mut self.bytes);
        // Every encoding ends a record with a newline; the separator above takes its place.
        if self.bytes.last() == Some(&b'\n') {
            self.bytes.pop();
        }
        self.events += 1;
    }

    /// The finished body, leaving this one empty. A body of one event is that event alone (no
    /// trailing newline, as `curl -d` sends it); newline-delimited bodies of several end with
    /// a newline.
    pub fn take(&mut self) -> Vec<u8> {
        match self.encoding {
            Encoding::JsonArray if self.events > 0 => self.bytes.push(b']'),
            Encoding::JsonArray => {}
            _ if self.events > 1 => self.bytes.push(b'\n'),
            _ => {}
        }
        self.events = 0;
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepsentry_core::{Origin, Value};

    fn event(message: &str, score: Option<f64>) -> Event {
        let timestamp = chrono::DateTime::parse_from_rfc3339("2026-11-06T14:23:46Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut event = Event::from_str(message, timestamp, Origin::new("in", "s1"));
        if let Some(score) = score {
            event.fields.insert("anomaly_score", Value::Float(score));
            event.fields.insert("anomaly_threshold", Value::Float(2.45));
            event.fields.insert("is_anomaly", Value::Bool(score > 2.45));
        }
        event
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn json_is_one_object_or_one_per_line() {
        let mut body = Body::new(Encoding::Json);
        body.push(&event("a \"quoted\" line", Some(3.67)));
        let one = body.take();
        let object = json(&one);
        assert_eq!(object["message"], "a \"quoted\" line");
        assert_eq!(object["anomaly_score"], 3.67);
        assert_eq!(object["is_anomaly"], true);
        assert!(!one.ends_with(b"\n"));

        body.push(&event("first", None));
        body.push(&event("second", None));
        assert_eq!(body.events(), 2);
        let two = String::from_utf8(body.take()).unwrap();
        let lines: Vec<&str> = two.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(json(lines[1].as_bytes())["message"], "second");
        assert!(two.ends_with('\n'));
        assert!(body.is_empty());
    }

    #[test]
    fn json_array_holds_the_batch() {
        let mut body = Body::new(Encoding::JsonArray);
        for i in 0..3 {
            body.push(&event(&format!("line {i}"), None));
        }
        let array = json(&body.take());
        let messages: Vec<&str> = array
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["line 0", "line 1", "line 2"]);
        body.push(&event("alone", None));
        assert_eq!(json(&body.take()).as_array().unwrap().len(), 1);
    }

    #[test]
    fn monitor_is_the_live_monitors_line_and_text_the_raw_line() {
        let mut body = Body::new(Encoding::Monitor);
        body.push(&event("Unexpected error", Some(3.67)));
        assert_eq!(
            String::from_utf8(body.take()).unwrap(),
            "[14:23:46] ANOMALY - score: 3.67 (threshold: 2.45) - \"Unexpected error\" ⚠️"
        );
        let mut body = Body::new(Encoding::Text);
        body.push(&event("Unexpected error", Some(3.67)));
        body.push(&event("second", None));
        assert_eq!(
            String::from_utf8(body.take()).unwrap(),
            "Unexpected error\nsecond\n"
        );
    }

    #[test]
    fn content_types_follow_the_encoding() {
        assert_eq!(content_type(Encoding::Json, 1), "application/json");
        assert_eq!(content_type(Encoding::Json, 10), "application/x-ndjson");
        assert_eq!(content_type(Encoding::JsonArray, 100), "application/json");
        assert_eq!(
            content_type(Encoding::Monitor, 1),
            "text/plain; charset=utf-8"
        );
        assert_eq!(default_max_events(Encoding::JsonArray), 100);
        assert_eq!(default_max_events(Encoding::Monitor), 1);
    }
}

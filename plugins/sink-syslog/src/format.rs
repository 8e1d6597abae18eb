//! Syslog messages: RFC 5424 with the detector's verdict as structured data, or the older
//! BSD format of RFC 3164.

use std::io::Write;

use chrono::SecondsFormat;
use deepsentry_core::anomaly;
use deepsentry_core::codec::{encode, Encoding, SinkEncodings};
use deepsentry_core::event::Value;
use deepsentry_core::Event;
use serde::Deserialize;

/// Which syslog protocol's message format to write.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RFC 5424: ISO timestamp, structured data with score and threshold.
    #[default]
    Rfc5424,
    /// RFC 3164, the BSD format `logger` writes by default.
    Rfc3164,
}

/// Syslog facilities (RFC 5424, section 6.2.1).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Facility {
    Kern,
    #[default]
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// Syslog severities (RFC 5424, section 6.2.1).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Severity {
    Emerg,
    #[default]
    Alert,
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    fn code(self) -> u8 {
        self as u8
    }
}

/// What the message part (after the header) holds: the live monitor's line by default, as
/// `deepsentry | grep ANOMALY | logger` forwards it; the raw log line; or the event as a JSON
/// object.
pub struct SyslogEncodings;

impl SinkEncodings for SyslogEncodings {
    const SUPPORTED: &'static [Encoding] = &[Encoding::Monitor, Encoding::Text, Encoding::Json];
    const DEFAULT: Encoding = Encoding::Monitor;
}

/// Everything about the header that does not change per event.
#[derive(Debug, Clone)]
pub struct Header {
    /// RFC 5424 or 3164.
    pub protocol: Protocol,
    /// The facility.
    pub facility: Facility,
    /// The severity.
    pub severity: Severity,
    /// `APP-NAME` (5424) or `TAG` (3164).
    pub app_name: String,
    /// `HOSTNAME`; `None` on the local socket, where RFC 3164 messages carry none (the
    /// daemon adds its own, as for glibc's `syslog()` and `logger`).
    pub hostname: Option<String>,
    /// `PROCID`.
    pub proc_id: u32,
    /// The message part.
    pub encoding: Encoding,
}

/// The enterprise number of the structured-data id: 32473 is reserved for examples and
/// private use (RFC 5612).
const SD_ID: &str = "deepsentry@32473";

/// Characters that are not allowed in header fields (RFC 5424 PRINTUSASCII) become `_`.
fn header_field(out: &mut Vec<u8>, value: &str, max: usize) {
    if value.is_empty() {
        out.push(b'-');
        return;
    }
    for byte in value.bytes().take(max) {
        out.push(if (33..=126).contains(&byte) {
            byte
        } else {
            b'_'
        });
    }
}

/// A structured-data parameter value with `"`, `\` and `]` escaped.
fn sd_value(out: &mut Vec<u8>, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push(b'\\');
        }
        let mut utf8 = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
}

fn structured_data(out: &mut Vec<u8>, event: &Event) {
    let params: Vec<(&str, &Value)> = [
        ("score", anomaly::ANOMALY_SCORE),
        ("threshold", anomaly::ANOMALY_THRESHOLD),
        ("anomaly", anomaly::IS_ANOMALY),
        ("session", anomaly::SESSION),
        ("reason", anomaly::ANOMALY_REASON),
        ("count", anomaly::ALERT_COUNT),
    ]
    .into_iter()
    .filter_map(|(name, key)| event.fields.get(key).map(|v| (name, v)))
    .collect();
    if params.is_empty() {
        out.push(b'-');
        return;
    }
    out.push(b'[');
    out.extend_from_slice(SD_ID.as_bytes());
    for (name, value) in params {
        let _ = write!(out, " {name}=\"");
        let text = match value {
            Value::Float(x) => format!("{x:.4}"),
            other => other.to_string(),
        };
        sd_value(out, &text);
        out.push(b'"');
    }
    out.push(b']');
}

impl Header {
    /// Appends the syslog message for `event` to `out` (no framing).
    pub fn write(&self, event: &Event, out: &mut Vec<u8>) {
        let pri = u16::from(self.facility.code()) * 8 + u16::from(self.severity.code());
        let _ = write!(out, "<{pri}>");
        match self.protocol {
            Protocol::Rfc5424 => {
                out.extend_from_slice(b"1 ");
                out.extend_from_slice(
                    event
                        .timestamp
                        .to_rfc3339_opts(SecondsFormat::Micros, true)
                        .as_bytes(),
                );
                out.push(b' ');
                header_field(out, self.hostname.as_deref().unwrap_or(""), 255);
                out.push(b' ');
                header_field(out, &self.app_name, 48);
                let _ = write!(out, " {} ", self.proc_id);
                let anomaly = event.is_anomaly();
                out.extend_from_slice(if anomaly { b"anomaly " } else { b"- " });
                structured_data(out, event);
                out.push(b' ');
            }
            Protocol::Rfc3164 => {
                let _ = write!(out, "{} ", event.timestamp.format("%b %e %H:%M:%S"));
                if let Some(hostname) = &self.hostname {
                    header_field(out, hostname, 255);
                    out.push(b' ');
                }
                header_field(out, &self.app_name, 32);
                let _ = write!(out, "[{}]: ", self.proc_id);
            }
        }
        let start = out.len();
        encode(self.encoding, event, out);
        // One message per event: the codec's newline goes, and so do line breaks inside.
        while out.last() == Some(&b'\n') {
            out.pop();
        }
        for byte in &mut out[start..] {
            if *byte == b'\n' || *byte == b'\r' {
                *byte = b' ';
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use deepsentry_core::Origin;

    fn header(protocol: Protocol) -> Header {
        Header {
            protocol,
            facility: Facility::User,
            severity: Severity::Alert,
            app_name: "deepsentry".into(),
            hostname: Some("web 1".into()),
            proc_id: 42,
            encoding: Encoding::Text,
        }
    }

    fn event() -> Event {
        let ts = chrono::Utc
            .with_ymd_and_hms(2022, 1, 5, 14, 23, 47)
            .unwrap();
        let mut event = Event::from_str("disk \"full\"]", ts, Origin::new("in", "app"));
        event
            .fields
            .insert(anomaly::ANOMALY_SCORE, Value::Float(3.67));
        event
            .fields
            .insert(anomaly::ANOMALY_THRESHOLD, Value::Float(2.45));
        event.fields.insert(anomaly::IS_ANOMALY, Value::Bool(true));
        event
            .fields
            .insert("session", Value::Str("blk_1\"]".into()));
        event
    }

    fn written(protocol: Protocol, event: &Event) -> String {
        let mut out = Vec::new();
        header(protocol).write(event, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc5424_with_structured_data() {
        assert_eq!(
            written(Protocol::Rfc5424, &event()),
            "<9>1 2022-01-05T14:23:47.000000Z web_1 deepsentry 42 anomaly \
             [deepsentry@32473 score=\"3.6700\" threshold=\"2.4500\" anomaly=\"true\" \
             session=\"blk_1\\\"\\]\"] disk \"full\"]"
        );
    }

    #[test]
    fn rfc3164_and_unscored_events() {
        let plain = Event::from_str(
            "a\nb",
            chrono::Utc.with_ymd_and_hms(2022, 1, 5, 4, 3, 2).unwrap(),
            Origin::new("in", "app"),
        );
        assert_eq!(
            written(Protocol::Rfc3164, &plain),
            "<9>Jan  5 04:03:02 web_1 deepsentry[42]: a b"
        );
        assert!(written(Protocol::Rfc5424, &plain).ends_with(" 42 - - a b"));
    }

    #[test]
    fn the_local_socket_format_has_no_hostname() {
        let mut h = header(Protocol::Rfc3164);
        h.hostname = None;
        let mut out = Vec::new();
        h.write(&event(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("<9>Jan  5 14:23:47 deepsentry[42]: "),
            "{text}"
        );
    }

    #[test]
    fn priorities() {
        let mut h = header(Protocol::Rfc3164);
        h.facility = Facility::Local7;
        h.severity = Severity::Debug;
        let mut out = Vec::new();
        h.write(&event(), &mut out);
        assert!(out.starts_with(b"<191>"));
    }
}

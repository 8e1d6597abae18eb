//! Reading syslog messages: RFC 5424 (`<165>1 2003-10-11T22:14:15.003Z host app 1234 ID47 -
//! text`) and RFC 3164, the BSD format (`<34>Oct 11 22:14:15 host su[12]: text`), with or
//! without the leading `<PRI>` (a line of `/var/log/syslog` has none).

use chrono::{DateTime, Utc};

use crate::timestamp;

/// Facility names by code (RFC 5424 table 1, with the names rsyslog and `logger` use).
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// Severity names by code (RFC 5424 table 2).
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// One syslog message, parsed. Absent parts (RFC 5424's `-`) are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyslogMessage {
    /// The facility's name (`daemon`, `local0`), from the priority.
    pub facility: Option<&'static str>,
    /// The severity's name (`err`, `warning`, `info`), from the priority.
    pub severity: Option<&'static str>,
    /// When the message says it was sent.
    pub timestamp: Option<DateTime<Utc>>,
    /// The sending host.
    pub hostname: Option<String>,
    /// The application (RFC 3164's tag).
    pub appname: Option<String>,
    /// The process id (RFC 3164's `[pid]` after the tag).
    pub procid: Option<String>,
    /// RFC 5424's message id.
    pub msgid: Option<String>,
    /// RFC 5424's structured data, as `{"id": {"param": "value"}}`.
    pub structured_data: Option<serde_json::Map<String, serde_json::Value>>,
    /// The free-form text.
    pub message: String,
}

/// `<PRI>` at the start of `text`: the facility and severity codes, and the rest.
fn priority(text: &str) -> Option<(u8, u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let close = rest.find('>')?;
    if close == 0 || close > 3 {
        return None;
    }
    let pri: u16 = rest[..close].parse().ok()?;
    if pri > 191 {
        return None;
    }
    Some(((pri / 8) as u8, (pri % 8) as u8, &rest[close + 1..]))
}

/// The next space-separated token of `text` and what follows its space.
fn token(text: &str) -> Option<(&str, &str)> {
    if text.is_empty() {
        return None;
    }
    Some(match text.find(' ') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, ""),
    })
}

fn nil(value: &str) -> Option<String> {
    (value != "-").then(|| value.to_owned())
}

/// Parses one syslog message (without its transport framing). `now` places a year-less
/// RFC 3164 time. `None` when the text is neither format.
pub fn parse(text: &str, now: DateTime<Utc>) -> Option<SyslogMessage> {
    let text = text.trim_end_matches(['\r', '\n', '\0']);
    let (codes, rest) = match priority(text) {
        Some((facility, severity, rest)) => (Some((facility, severity)), rest),
        None => (None, text),
    };
    let mut message = if let Some(after_version) = rest.strip_prefix("1 ") {
        parse_5424(after_version, now)?
    } else {
        parse_3164(rest, now, codes.is_some())?
    };
    if let Some((facility, severity)) = codes {
        message.facility = FACILITIES.get(usize::from(facility)).copied();
        message.severity = SEVERITIES.get(usize::from(severity)).copied();
    }
    Some(message)
}

fn parse_5424(text: &str, now: DateTime<Utc>) -> Option<SyslogMessage> {
    let (time, rest) = token(text)?;
    let (hostname, rest) = token(rest)?;
    let (appname, rest) = token(rest)?;
    let (procid, rest) = token(rest)?;
    let (msgid, rest) = token(rest)?;
    let (structured_data, rest) = structured_data(rest)?;
    // Relays re-framing an RFC 3164 message keep the space after its header: the text
    // starts at its first non-space.
    let rest = rest.trim_start_matches(' ');
    Some(SyslogMessage {
        timestamp: if time == "-" {
            None
        } else {
            Some(timestamp::leading(time.as_bytes(), now)?)
        },
        hostname: nil(hostname),
        appname: nil(appname),
        procid: nil(procid),
        msgid: nil(msgid),
        structured_data,
        message: rest.strip_prefix('\u{feff}').unwrap_or(rest).to_owned(),
        ..SyslogMessage::default()
    })
}

/// RFC 5424's structured data at the start of `text` (`-`, or `[id k="v" ...]...`) and the
/// rest of the text.
#[allow(clippy::type_complexity)]
fn structured_data(
    text: &str,
) -> Option<(Option<serde_json::Map<String, serde_json::Value>>, &str)> {
    if let Some(rest) = text.strip_prefix('-') {
        return Some((None, rest));
    }
    let mut elements = serde_json::Map::new();
    let mut rest = text;
    while let Some(inner) = rest.strip_prefix('[') {
        let (id, mut params) = match inner.find([' ', ']']) {
            Some(at) => (&inner[..at], &inner[at..]),
            None => return None,
        };
        let mut values = serde_json::Map::new();
        loop {
            params = params.trim_start_matches(' ');
            if let Some(after) = params.strip_prefix(']') {
                rest = after;
                break;
            }
            let eq = params.find("=\"")?;
            let name = &params[..eq];
            let (value, after) = quoted(&params[eq + 2..])?;
            values.insert(name.to_owned(), serde_json::Value::String(value));
            params = after;
        }
        elements.insert(id.to_owned(), serde_json::Value::Object(values));
    }
    if elements.is_empty() {
        return None;
    }
    Some((Some(elements), rest))
}

/// A parameter value up to its closing quote (`\"`, `\\` and `\]` unescaped), and the rest.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next() {
                Some((_, next @ ('"' | '\\' | ']'))) => value.push(next),
                Some((_, next)) => {
                    value.push('\\');
                    value.push(next);
                }
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// Whether `token` is RFC 3164's tag (`sshd[42]:`, `kernel:`) rather than a host name.
fn looks_like_tag(token: &str) -> bool {
    token.ends_with(':') || token.contains('[')
}

fn parse_3164(text: &str, now: DateTime<Utc>, had_priority: bool) -> Option<SyslogMessage> {
    let time = timestamp::leading(text.as_bytes(), now);
    // `Mmm dd hh:mm:ss` is 15 bytes; RFC 3339 times (rsyslog's high-precision template) run
    // to the next space.
    let rest = match time {
        Some(_) if text.as_bytes().get(3) == Some(&b' ') => text.get(16..).unwrap_or(""),
        Some(_) => token(text).map_or("", |(_, rest)| rest),
        // Without a time, only a message with a priority is syslog.
        None if had_priority => text,
        None => return None,
    };
    let mut message = SyslogMessage {
        timestamp: time,
        ..SyslogMessage::default()
    };
    let mut rest = rest;
    if let Some((first, after)) = token(rest) {
        if !looks_like_tag(first) && time.is_some() {
            message.hostname = Some(first.to_owned());
            rest = after;
        }
    }
    // The tag: letters up to `[`, `:` or a space; then an optional `[pid]` and a colon.
    let tag_len = rest.find(['[', ':', ' ']).unwrap_or(0);
    if tag_len > 0 && tag_len <= 48 {
        let after_tag = &rest[tag_len..];
        let (procid, after) = match after_tag.strip_prefix('[') {
            Some(inner) => match inner.find(']') {
                Some(close) => (Some(inner[..close].to_owned()), &inner[close + 1..]),
                None => (None, after_tag),
            },
            None => (None, after_tag),
        };
        if let Some(text) = after.strip_prefix(':') {
            message.appname = Some(rest[..tag_len].to_owned());
            message.procid = procid;
            rest = text.trim_start_matches(' ');
        }
    }
    message.message = rest.to_owned();
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let m = parse(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 \
             [exampleSDID@32473 iut=\"3\" eventSource=\"Appli\\\"cation\"] \u{feff}An application event",
            now(),
        )
        .unwrap();
        assert_eq!(m.facility, Some("local4"));
        assert_eq!(m.severity, Some("notice"));
        assert_eq!(m.hostname.as_deref(), Some("mymachine.example.com"));
        assert_eq!(m.appname.as_deref(), Some("evntslog"));
        assert_eq!(m.procid, None);
        assert_eq!(m.msgid.as_deref(), Some("ID47"));
        assert_eq!(m.message, "An application event");
        let sd = m.structured_data.unwrap();
        assert_eq!(sd["exampleSDID@32473"]["eventSource"], "Appli\"cation");
        assert_eq!(
            m.timestamp.unwrap(),
            Utc.with_ymd_and_hms(2003, 10, 11, 22, 14, 15).unwrap()
                + chrono::Duration::milliseconds(3)
        );
    }

    #[test]
    fn rfc5424_as_logger_sends_it() {
        let m = parse(
            "<13>1 2024-05-31T10:00:00.123456+02:00 host root 4242 - [timeQuality tzKnown=\"1\"] hello there",
            now(),
        )
        .unwrap();
        assert_eq!(m.severity, Some("notice"));
        assert_eq!(m.facility, Some("user"));
        assert_eq!(m.appname.as_deref(), Some("root"));
        assert_eq!(m.procid.as_deref(), Some("4242"));
        assert_eq!(m.message, "hello there");
    }

    #[test]
    fn rfc3164_with_and_without_priority_or_host() {
        let m = parse(
            "<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed",
            now(),
        )
        .unwrap();
        assert_eq!(m.facility, Some("auth"));
        assert_eq!(m.severity, Some("crit"));
        assert_eq!(m.hostname.as_deref(), Some("mymachine"));
        assert_eq!(m.appname.as_deref(), Some("su"));
        assert_eq!(m.procid.as_deref(), Some("230"));
        assert_eq!(m.message, "'su root' failed");
        assert_eq!(
            m.timestamp.unwrap(),
            Utc.with_ymd_and_hms(2023, 10, 11, 22, 14, 15).unwrap()
        );

        let m = parse("Jun  1 09:00:55 combo kernel: usb 1-1: new device", now()).unwrap();
        assert_eq!(m.facility, None);
        assert_eq!(m.hostname.as_deref(), Some("combo"));
        assert_eq!(m.appname.as_deref(), Some("kernel"));
        assert_eq!(m.message, "usb 1-1: new device");

        let m = parse("<13>May 31 10:00:00 app[7]: local socket", now()).unwrap();
        assert_eq!(m.hostname, None);
        assert_eq!(m.appname.as_deref(), Some("app"));
        assert_eq!(m.message, "local socket");
    }

    #[test]
    fn other_text_is_not_syslog() {
        assert_eq!(parse("just a line", now()), None);
        assert_eq!(parse("<999>1 x", now()), None);
        assert!(parse("<13>plain text with a priority", now()).is_some());
    }
}

//! The severity of a log line: the level it names (`ERROR`, `[warn]`, `level=fatal`, logcat's
//! `E`), raised by an exception, a traceback or a panic in its words; failing a level, what
//! its words say (`Exception`, `Traceback`, `failed`, `panic`). The detector learns how
//! common each severity is in a system's normal logs, so a level is evidence only where it is
//! rare.

use serde::{Deserialize, Serialize};

/// How serious a line says it is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `TRACE`, `DEBUG`, `VERBOSE`.
    Debug,
    /// `INFO`, `NOTICE`, or no level at all.
    Info,
    /// `WARN`, `WARNING`, or a word of failure (`failed`, `refused`, `timeout`).
    Warn,
    /// `ERROR`, `ERR`, `SEVERE`, or an exception (`IOException`, `ValueError`, `Traceback`).
    Error,
    /// `FATAL`, `CRIT`, `CRITICAL`, `ALERT`, `EMERG`, `PANIC`, or a `panic`.
    Fatal,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Fatal,
    ];

    /// The lowercase name (`error`).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    /// The severity a level name means (`E`, `err`, `Warning`, `crit`), if it is one.
    pub fn from_level(word: &str) -> Option<Severity> {
        if word.len() == 1 {
            // logcat and glog write the level as one capital letter.
            return match word.as_bytes()[0] {
                b'V' | b'D' => Some(Severity::Debug),
                b'I' => Some(Severity::Info),
                b'W' => Some(Severity::Warn),
                b'E' => Some(Severity::Error),
                b'F' => Some(Severity::Fatal),
                _ => None,
            };
        }
        if word.len() > 13 {
            return None;
        }
        let mut lower = [0u8; 13];
        for (d, s) in lower.iter_mut().zip(word.bytes()) {
            *d = s.to_ascii_lowercase();
        }
        Some(match &lower[..word.len()] {
            b"trace" | b"debug" | b"dbg" | b"verbose" | b"fine" | b"finer" | b"finest" => {
                Severity::Debug
            }
            b"info" | b"information" | b"informational" | b"notice" => Severity::Info,
            b"warn" | b"warning" => Severity::Warn,
            b"error" | b"err" | b"severe" => Severity::Error,
            b"fatal" | b"crit" | b"critical" | b"alert" | b"emerg" | b"emergency" | b"panic" => {
                Severity::Fatal
            }
            _ => return None,
        })
    }
}

/// How many leading tokens may hold the level (`2024-01-15 14:23:47,123 [main] ERROR ...`).
const LEVEL_TOKENS: usize = 8;

/// Keys whose value is a level (`level=warn`, `"severity":"error"`).
fn is_level_key(key: &str) -> bool {
    let key = key.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    // Asked of every `key=value` and `key:value` of a line's first words (times included):
    // no allocation.
    ["level", "lvl", "severity", "loglevel", "log_level"]
        .iter()
        .any(|name| key.eq_ignore_ascii_case(name))
}

/// The level a syslog priority at the start of a line names (`<11>`, `<134>1 2024-...`): its
/// low three bits are the RFC 5424 severity, 0 (emergency) to 7 (debug).
fn syslog_priority(line: &str) -> Option<Severity> {
    let digits = line.strip_prefix('<')?.split_once('>')?.0;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let priority: u16 = digits.parse().ok()?;
    if priority > 191 {
        return None;
    }
    Some(match priority & 7 {
        0..=2 => Severity::Fatal,
        3 => Severity::Error,
        4 => Severity::Warn,
        5 | 6 => Severity::Info,
        _ => Severity::Debug,
    })
}

/// The level named in the first tokens of `line`: a syslog priority, a bare or bracketed level
/// word, Python's `WARNING:logger:`, or a level key's value: `level=warn` (logfmt),
/// `"level":"warn"` (JSON, in one token or as `"level": "warn"`).
fn named_level(line: &str) -> Option<Severity> {
    if let Some(severity) = syslog_priority(line) {
        return Some(severity);
    }
    // The previous token was a level key whose value is the next token (`"level": "warn"`).
    let mut value_follows = false;
    // Whether every token so far was the line's prefix (its time, ids, thread), not words.
    let mut before_words = true;
    let mut tokens = line.split_ascii_whitespace().peekable();
    for index in 0..LEVEL_TOKENS {
        let Some(token) = tokens.next() else { break };
        let prefix_only = before_words;
        before_words = before_words && is_prefix(token);
        if std::mem::take(&mut value_follows) {
            let word = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            if let Some(severity) = Severity::from_level(word) {
                return Some(severity);
            }
        }
        // `key=value` and `"key":"value"` pairs, several to a token in compact JSON.
        let mut paired = false;
        for pair in token.split(',') {
            let Some((key, value)) = pair.split_once(['=', ':']) else {
                continue;
            };
            if !is_level_key(key) {
                continue;
            }
            paired = true;
            let word = value.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            if word.is_empty() {
                value_follows = true;
            } else if let Some(severity) = Severity::from_level(word) {
                return Some(severity);
            }
        }
        if paired || token.contains('=') {
            continue;
        }
        // Python's logging writes `WARNING:root:message` as one token.
        if let Some((head, _)) = token.split_once(':') {
            if head.len() > 1 && head.bytes().all(|b| b.is_ascii_uppercase()) {
                if let Some(severity) = Severity::from_level(head) {
                    return Some(severity);
                }
            }
        }
        let word = token.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        if let Some(severity) = Severity::from_level(word) {
            let place = LetterPlace {
                first: index == 0,
                after_prefix: index > 0 && prefix_only,
                next: tokens.peek().copied(),
            };
            if stands_as_level(token, word, place) {
                return Some(severity);
            }
        }
    }
    None
}

/// Where in a line a one-letter level name stands.
struct LetterPlace<'a> {
    /// It is the line's first token.
    first: bool,
    /// Only the line's prefix (time, ids, bracketed thread names) comes before it, and some.
    after_prefix: bool,
    /// The token after it.
    next: Option<&'a str>,
}

/// Whether a level name found in a line's first tokens is its level. A word (`ERROR`,
/// `[warn]`, `critical`) is, wherever it stands among them: column logs write the level or
/// state after the node and component (`node-12 switch_module error 3 Link ok`), and
/// reading only words in the usual places made such logs' error columns informational and
/// their novelty estimates worse (measured, models/README). One capital letter is a level
/// only standing alone where logcat and glog write it, with words after it: after the time
/// or thread id (`1702 2395 E Tag:`) or first, before the date (glog's `E <NUM> ...`); in
/// running text it is a word (`sensor reads 72 F`, `the E key`, `vitamin D`).
fn stands_as_level(token: &str, word: &str, place: LetterPlace) -> bool {
    if word.len() > 1 {
        return true;
    }
    let Some(next) = place.next else {
        return false;
    };
    word == token && (place.after_prefix || place.first && is_prefix(next))
}

/// Whether `token` is part of a line's prefix rather than its message: it has no letters but
/// those of placeholders (`<NUM>`, `<TIME>,`), or it is bracketed whole (`[main]`).
fn is_prefix(token: &str) -> bool {
    if token.len() > 1
        && matches!(
            (token.as_bytes()[0], token.as_bytes()[token.len() - 1]),
            (b'[', b']') | (b'(', b')') | (b'{', b'}')
        )
    {
        return true;
    }
    let mut letters_outside = false;
    let mut in_placeholder = false;
    for c in token.chars() {
        match c {
            '<' => in_placeholder = true,
            '>' => in_placeholder = false,
            c if c.is_alphabetic() && !in_placeholder => letters_outside = true,
            _ => {}
        }
    }
    !letters_outside
}

/// Whether `word`, one word of a template, may make its line's severity: a level name or a
/// word [`worded_severity`] reads (`ERROR`, `[warn]`, `IOException`, `failed`, `<5XX>`).
pub fn names_severity(word: &str) -> bool {
    Severity::from_level(word.trim_matches(|c: char| !c.is_ascii_alphanumeric())).is_some()
        || worded_severity(word).is_some()
}

/// What the words of `line` say: an exception or error type, a traceback, a panic, a failure,
/// a server error's HTTP status (the normalizer's `<5XX>`).
fn worded_severity(line: &str) -> Option<Severity> {
    let mut severity = None;
    for word in line.split(|c: char| !c.is_ascii_alphanumeric()) {
        let found = if word.len() > 9 && (word.ends_with("Exception") || word.ends_with("Error"))
            || word == "Exception"
            || word == "Traceback"
            || word == "5XX"
        {
            Severity::Error
        } else if word.eq_ignore_ascii_case("panic") || word == "panicked" {
            Severity::Fatal
        } else if matches!(
            word.to_ascii_lowercase().as_str(),
            "failed" | "failure" | "refused" | "timeout"
        ) {
            Severity::Warn
        } else {
            continue;
        };
        severity = severity.max(Some(found));
        if found == Severity::Fatal {
            break;
        }
    }
    severity
}

/// The severity of `line`: its named level, raised by an exception, a traceback or a panic in
/// its words, so an `INFO` line that carries an exception counts as an error; where it names
/// no level, what its words say (a word of failure is a warning), else `INFO`.
pub fn severity_of(line: &str) -> Severity {
    match (named_level(line), worded_severity(line)) {
        (Some(named), worded) => raised(named, worded),
        (None, worded) => worded.unwrap_or(Severity::Info),
    }
}

/// A named level raised by what the words say. Only an exception, a traceback or a panic
/// raises it: a word of failure (`failed`, `timeout`) in a line the program itself logged at
/// `INFO` is its routine (`mount failed, retrying`), and the program's level knows better.
fn raised(named: Severity, worded: Option<Severity>) -> Severity {
    match worded {
        Some(worded) if worded > Severity::Warn => named.max(worded),
        _ => named,
    }
}

/// Fields read as a decoded event's level when no `level_field` is named, first present wins.
pub const LEVEL_FIELDS: [&str; 3] = ["level", "severity", "lvl"];

/// The level a source decoded for `event`: the field `level_field`, or the first of
/// [`LEVEL_FIELDS`] it has.
pub fn level_of<'e>(
    event: &'e deepsentry_core::Event,
    level_field: Option<&str>,
) -> Option<&'e deepsentry_core::Value> {
    match level_field {
        Some(name) => event.fields.get(name),
        None if event.fields.is_empty() => None,
        None => LEVEL_FIELDS.iter().find_map(|name| event.fields.get(name)),
    }
}

/// The severity of a line whose level a source decoded into a field (`level: warning`): the
/// field's level, raised by an exception, a traceback or a panic in the line's words.
pub fn severity_with_level(line: &str, level: &str) -> Severity {
    let named = Severity::from_level(level.trim()).unwrap_or(Severity::Info);
    raised(named, worded_severity(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_levels_in_the_usual_places() {
        let cases = [
            (
                "081109 203615 148 INFO dfs.DataNode: Receiving block",
                Severity::Info,
            ),
            (
                "2024-01-15 14:23:47,123 [main] ERROR com.x.Y - boom",
                Severity::Error,
            ),
            (
                "[Sun Dec 04 04:47:44 2005] [error] mod_jk child init",
                Severity::Error,
            ),
            (
                "03-17 16:13:38.811  1702  2395 D WindowManager: x",
                Severity::Debug,
            ),
            ("03-17 16:13:38.811  1702  2395 E Foo: x", Severity::Error),
            ("time=1 level=warning msg=\"slow\"", Severity::Warn),
            (
                "- 1117838570 2005.06.03 R02 RAS KERNEL FATAL data TLB error",
                Severity::Fatal,
            ),
            ("plain words and nothing else", Severity::Info),
            (
                r#"{"ts":"2024-01-02T10:00:02Z","level":"warn","msg":"slow query"}"#,
                Severity::Warn,
            ),
            (
                r#"{"time": "10:00", "severity": "ERROR", "message": "x"}"#,
                Severity::Error,
            ),
            ("WARNING:root:disk almost full", Severity::Warn),
            ("<11>Jan  2 10:00:01 web-03 app[7]: boom", Severity::Error),
            (
                "<134>1 2024-01-02T10:00:01Z web-03 app 7 - - ok",
                Severity::Info,
            ),
            ("<2>Jan  2 10:00:01 kernel: oops", Severity::Fatal),
            ("<999> not a priority", Severity::Info),
            (
                "2024-03-04T10:00:01.123456789Z stdout F ready to serve",
                Severity::Info,
            ),
            (
                r#"2024-03-04T10:00:01.123456789Z stderr F {"level":"error","msg":"x"}"#,
                Severity::Error,
            ),
            // A key that is not a level's does not name one, whatever its value.
            ("user=error_handler status=ok", Severity::Info),
            // Templates: the time is a placeholder, the level the first word after it.
            ("<TIME>, Info CBS Loaded Servicing Stack", Severity::Info),
            (
                "<TIME>, Error CSI <HEX> WcpInitialize called",
                Severity::Error,
            ),
            (
                "<TIME> [pool-1] warning retrying the upload",
                Severity::Warn,
            ),
            ("<NUM> <NUM> <NUM> W ActivityManager: slow", Severity::Warn),
            ("E <NUM> <NUM> <PATH>] failed to sync pod", Severity::Error),
            (
                "sshd[<NUM>]: error: Could not load host key",
                Severity::Error,
            ),
            ("<TIME> mysqld [Warning] Aborted connection", Severity::Warn),
            ("logrotate: ALERT exited abnormally", Severity::Fatal),
        ];
        for (line, want) in cases {
            assert_eq!(severity_of(line), want, "{line}");
        }
    }

    #[test]
    fn a_capital_letter_in_running_text_is_no_level() {
        for line in [
            "sensor reads <NUM> F",
            "sensor reads <NUM> F today",
            "the E key was pressed",
            "E",
            // Kubernetes' container logs (CRI): the `F` (full) or `P` (partial) tag after the
            // stream is no level.
            "<TIME> stdout F ready to serve",
        ] {
            assert_eq!(severity_of(line), Severity::Info, "{line}");
        }
        // A level word is one wherever it stands among the first words: column logs write
        // the state after the node and the component.
        assert_eq!(
            severity_of("<NUM> <ID> switch_module error <NUM> Link ok"),
            Severity::Error
        );
    }

    #[test]
    fn words_raise_the_level() {
        assert_eq!(
            severity_of("INFO PacketResponder 1 Exception java.io.IOException: reset"),
            Severity::Error
        );
        assert_eq!(
            severity_of("Traceback (most recent call last):"),
            Severity::Error
        );
        assert_eq!(
            severity_of("sshd[1]: Failed password for root"),
            Severity::Warn
        );
        assert_eq!(
            severity_of("thread 'main' panicked at src/main.rs"),
            Severity::Fatal
        );
        // A word of failure does not overrule the level the program chose.
        assert_eq!(
            severity_of("2005-08-28 RAS KERNEL INFO NFS Mount failed on io7, retrying (1)"),
            Severity::Info
        );
        assert_eq!(
            severity_of("[info] probe timeout, reconnecting"),
            Severity::Info
        );
        assert_eq!(
            severity_of("level=debug msg=\"connection refused\""),
            Severity::Debug
        );
        // A capital I inside a sentence is not a level.
        assert_eq!(severity_of("I/O done, Errors: 0"), Severity::Info);
    }

    #[test]
    fn a_decoded_level_field() {
        assert_eq!(severity_with_level("disk full", "CRIT"), Severity::Fatal);
        assert_eq!(severity_with_level("ok", "nonsense"), Severity::Info);
        assert_eq!(severity_with_level("retry failed", "info"), Severity::Info);
        assert_eq!(
            severity_with_level("caught IOException", "info"),
            Severity::Error
        );
    }
}

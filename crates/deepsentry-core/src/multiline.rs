//! Joining the lines of one logged event (a stack trace, a panic, a continued line) into one
//! event, the way Vector's `multiline` and Fluent Bit's multiline parsers do.
//!
//! Two ways to say what belongs together:
//! - a **preset** (`java`, `python`, `go`, `ruby`, or `any` for the traces of all four, as
//!   Fluent Bit's list of multiline parsers): an event starts at a line that begins with a
//!   timestamp; in a stream whose lines carry none, at a line that is not indented and is not a
//!   continuation of the language's traces (`Caused by:`, `... 12 more`, `Traceback`, an
//!   exception line, a goroutine header, a `from file:line` frame);
//! - **patterns**: `start_pattern` opens an event and `condition_pattern` with `mode` says which
//!   of the following lines join it, exactly as Vector's modes do.
//!
//! An event still open when no line came for `timeout_ms` is sent as it is, so the last trace
//! of a quiet stream is not held back.

use std::fmt;
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// How long an open event waits for its next line by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;

/// A language whose traces a preset recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Java and the JVM languages: `at` frames, `Caused by:`, `... N more`.
    Java,
    /// Python: `Traceback (most recent call last):`, its frames and the exception line.
    Python,
    /// Go: a `panic:` with its goroutines and frames.
    Go,
    /// Ruby: `from file:line:in` frames and `file:line:in` lines.
    Ruby,
    /// The traces of any of the four: what `train --multiline auto` joins and the sidecar
    /// reads, so that a model and the source feeding it join an app's traces alike whatever
    /// its language.
    Any,
}

/// Which lines after a start line join its event (Vector's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every following line that matches `condition_pattern` joins (indented frames).
    ContinueThrough,
    /// Every line that matches joins, and so does the one after the last match (a trailing
    /// `\` continues a line).
    ContinuePast,
    /// Following lines join until one matches, which starts the next event.
    HaltBefore,
    /// Following lines join up to and including the first that matches (a terminator).
    HaltWith,
}

/// The `multiline` setting of a source: a preset's name, or a map of patterns (or of
/// `preset` and `timeout_ms`).
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    rule: Rule,
    /// How long an open event waits for its next line.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
enum Rule {
    Preset(Preset),
    Patterns {
        start: Regex,
        condition: Regex,
        mode: Mode,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MultilineMap {
    preset: Option<Preset>,
    start_pattern: Option<String>,
    condition_pattern: Option<String>,
    mode: Option<Mode>,
    timeout_ms: Option<u64>,
}

fn compile(pattern: &str, key: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("`{key}` is not a valid regex: {e}"))
}

impl TryFrom<MultilineMap> for MultilineConfig {
    type Error = String;

    fn try_from(map: MultilineMap) -> Result<Self, String> {
        let timeout = Duration::from_millis(map.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let patterns = (map.start_pattern, map.condition_pattern, map.mode);
        let rule = match (map.preset, patterns) {
            (Some(preset), (None, None, None)) => Rule::Preset(preset),
            (Some(_), _) => {
                return Err(
                    "give either `preset` or `start_pattern`, `condition_pattern` and \
                            `mode`, not both"
                        .into(),
                )
            }
            (None, (Some(start), Some(condition), Some(mode))) => Rule::Patterns {
                start: compile(&start, "start_pattern")?,
                condition: compile(&condition, "condition_pattern")?,
                mode,
            },
            (None, _) => {
                return Err(
                    "a multiline map needs `start_pattern`, `condition_pattern` and \
                            `mode` (continue_through, continue_past, halt_before, halt_with), \
                            or `preset` (java, python, go, ruby, any)"
                        .into(),
                )
            }
        };
        Ok(Self { rule, timeout })
    }
}

impl<'de> Deserialize<'de> for MultilineConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PresetOrMap;

        impl<'de> Visitor<'de> for PresetOrMap {
            type Value = MultilineConfig;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a preset (java, python, go, ruby, any) or a map of patterns")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<MultilineConfig, E> {
                let preset = Preset::deserialize(de::value::StrDeserializer::<E>::new(name))?;
                Ok(MultilineConfig::preset(preset))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MultilineConfig, A::Error> {
                let map = MultilineMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                MultilineConfig::try_from(map).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(PresetOrMap)
    }
}

impl MultilineConfig {
    /// A preset with the default timeout.
    pub fn preset(preset: Preset) -> Self {
        Self {
            rule: Rule::Preset(preset),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        }
    }

    /// Patterns in Vector's terms, with the default timeout.
    pub fn patterns(start: &str, condition: &str, mode: Mode) -> Result<Self, String> {
        MultilineConfig::try_from(MultilineMap {
            preset: None,
            start_pattern: Some(start.into()),
            condition_pattern: Some(condition.into()),
            mode: Some(mode),
            timeout_ms: None,
        })
    }
}

/// Whether `line` continues the trace before it, in a stream without timestamps. `in_trace`:
/// the language of the trace header or frame the open event already holds, if any, so a bare
/// `Name: message` line after a Python traceback is the exception that ends it.
fn continues(preset: Preset, line: &[u8], in_trace: Option<Preset>) -> bool {
    let trimmed = line.trim_ascii_start();
    if trimmed.is_empty() || trimmed.len() < line.len() {
        // Blank and indented lines: frames, code, wrapped text.
        return true;
    }
    let starts = |prefix: &[u8]| trimmed.starts_with(prefix);
    let exception = exception_name(trimmed).is_some();
    let java = || starts(b"Caused by: ") || starts(b"Suppressed: ") || starts(b"... ") || exception;
    // `after_trace`: a bare `Name: message` line ends the traceback the event holds.
    let python = |after_trace: bool| {
        starts(b"Traceback (most recent call last):")
            || starts(b"During handling of the above exception")
            || starts(b"The above exception was the direct cause")
            || exception
            || (after_trace && qualified_name_then_colon(trimmed))
    };
    let go = || {
        starts(b"goroutine ")
            || starts(b"created by ")
            || starts(b"[signal ")
            || starts(b"exit status ")
            || go_frame(trimmed)
    };
    let ruby = || starts(b"from ") || ruby_frame(trimmed) || exception;
    match preset {
        Preset::Java => java(),
        Preset::Python => python(in_trace.is_some()),
        Preset::Go => go(),
        Preset::Ruby => ruby(),
        // A bare `Name: message` ends a Python traceback only: after a Java trace it is the
        // next line logged.
        Preset::Any => java() || go() || ruby() || python(in_trace == Some(Preset::Python)),
    }
}

/// A line that opens a trace, so what follows is read as its frames: the language it is of.
fn opens_trace(line: &[u8]) -> Option<Preset> {
    let trimmed = line.trim_ascii_start();
    let starts = |prefix: &[u8]| trimmed.starts_with(prefix);
    if starts(b"Traceback (") || starts(b"File \"") {
        Some(Preset::Python)
    } else if starts(b"at ") {
        Some(Preset::Java)
    } else if starts(b"panic: ") || starts(b"goroutine ") {
        Some(Preset::Go)
    } else {
        None
    }
}

/// Trace lines a sample must hold before [`detect_preset`] names a preset: one frame or
/// header alone may be a message that happens to look like one.
const TRACE_LINES_TO_DETECT: usize = 3;

/// The preset whose traces `lines` (a sample of a log) hold, if they hold any: the language
/// with the most lines that only its traces write (an indented `at ...(...)` frame,
/// `Caused by:`, `Traceback (most recent call last):`, an indented `File "...", line N`,
/// `goroutine N [...]:`, Ruby's indented `from file.rb:N:in`). `None` for a log of
/// single-line events, whose lines then stay apart.
pub fn detect_preset<'l>(lines: impl IntoIterator<Item = &'l [u8]>) -> Option<Preset> {
    // In the order of `Preset`'s variants.
    const PRESETS: [Preset; 4] = [Preset::Java, Preset::Python, Preset::Go, Preset::Ruby];
    let mut seen = [0usize; PRESETS.len()];
    for preset in lines.into_iter().filter_map(trace_line_preset) {
        seen[preset as usize] += 1;
    }
    let (language, count) = seen
        .iter()
        .enumerate()
        .max_by_key(|(i, count)| (**count, std::cmp::Reverse(*i)))?;
    (*count >= TRACE_LINES_TO_DETECT).then_some(PRESETS[language])
}

/// Whether `line` is one line of a stack trace that only a trace writes (see
/// [`detect_preset`]): on its own, an event that a source did not join to its trace.
pub fn is_trace_line(line: &[u8]) -> bool {
    trace_line_preset(line).is_some()
}

/// The language whose traces alone write a line like `line`, if any.
fn trace_line_preset(line: &[u8]) -> Option<Preset> {
    let trimmed = line.trim_ascii_start();
    let indented = trimmed.len() < line.len();
    let starts = |prefix: &[u8]| trimmed.starts_with(prefix);
    if (indented && starts(b"at ") && trimmed.trim_ascii_end().ends_with(b")"))
        || starts(b"Caused by: ")
    {
        Some(Preset::Java)
    } else if starts(b"Traceback (most recent call last):")
        || (indented && starts(b"File \"") && trimmed.windows(7).any(|w| w == b", line "))
    {
        Some(Preset::Python)
    } else if starts(b"goroutine ") && trimmed.trim_ascii_end().ends_with(b"]:") {
        Some(Preset::Go)
    } else if indented && starts(b"from ") && ruby_frame(&trimmed[5..]) {
        Some(Preset::Ruby)
    } else {
        None
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.' | b':')
}

/// `Name: text` or a bare `Name`, where the name is a dotted or `::` identifier.
fn qualified_name_then_colon(line: &[u8]) -> bool {
    let len = line
        .iter()
        .take_while(|b| is_name_byte(**b) && **b != b':')
        .count();
    len > 0
        && line[0].is_ascii_alphabetic()
        && (len == line.len() || line[len..].starts_with(b": "))
}

/// The exception class naming a line (`java.lang.IllegalStateException: boom`,
/// `ValueError: bad`, `ActiveRecord::RecordNotFound`, `Caused by: x.y.IOError: disk`): a
/// qualified identifier ending in `Exception`, `Error`, `Throwable`, `Fault` or `Failure`,
/// alone or followed by `:`.
pub fn exception_name(line: &[u8]) -> Option<&str> {
    let line = line.trim_ascii_start();
    let line = line.strip_prefix(b"Caused by: ").unwrap_or(line);
    let len = line.iter().take_while(|b| is_name_byte(**b)).count();
    let mut name = &line[..len];
    while let Some(stripped) = name.strip_suffix(b":") {
        name = stripped;
    }
    let rest = &line[name.len()..];
    let ends_like_an_exception = [
        b"Exception".as_slice(),
        b"Error",
        b"Throwable",
        b"Fault",
        b"Failure",
    ]
    .iter()
    .any(|suffix| name.ends_with(suffix));
    let followed_well = rest.is_empty() || rest.starts_with(b":") || rest.starts_with(b" (");
    (name.first().is_some_and(u8::is_ascii_alphabetic) && ends_like_an_exception && followed_well)
        .then(|| std::str::from_utf8(name).ok())
        .flatten()
}

/// The exception a multiline event's later lines name (`rest`: the event after its first
/// line): the first line naming an exception class (Java's, Ruby's), else a last line of the
/// form `Name: message` after a Python traceback. `None` for a plain continued text.
pub fn trace_exception(rest: &str) -> Option<&str> {
    if let Some(name) = rest
        .lines()
        .find_map(|line| exception_name(line.as_bytes()))
    {
        return Some(name);
    }
    if !rest.contains("Traceback (") {
        return None;
    }
    let last = rest.lines().rev().find(|line| !line.trim().is_empty())?;
    if last.starts_with(|c: char| c.is_whitespace()) || !qualified_name_then_colon(last.as_bytes())
    {
        return None;
    }
    Some(last.split(':').next().unwrap_or(last))
}

/// Go's function line in a goroutine dump: `main.main()`, `net/http.(*conn).serve(0xc000)`.
fn go_frame(line: &[u8]) -> bool {
    let Some(open) = line.iter().position(|b| *b == b'(') else {
        return false;
    };
    line.ends_with(b")")
        && open > 0
        && line[..open]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._/*-[]".contains(b))
        && line[..open].contains(&b'.')
}

/// Ruby's `app/models/user.rb:12:in 'save'`.
fn ruby_frame(line: &[u8]) -> bool {
    let Some(token) = line.split(|b| *b == b' ').next() else {
        return false;
    };
    let mut parts = token.split(|b| *b == b':');
    let (Some(file), Some(number), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    file.ends_with(b".rb") && !number.is_empty() && number.iter().all(u8::is_ascii_digit) && {
        rest.starts_with(b"in")
    }
}

/// What the joiner did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The line is an event of its own, and no event is open.
    Alone,
    /// The line opened a new event (after closing the open one, if `closed`).
    Opened {
        /// An earlier open event was closed first and is ready.
        closed: bool,
    },
    /// The line joined the open event.
    Joined,
    /// The line joined the open event, which is now complete.
    Completed,
    /// The open event was closed and is ready; the line is an event of its own.
    ClosedThenAlone,
}

/// The state of one stream's joining: what the open event holds and how lines are classified.
/// It decides; the caller keeps the bytes.
#[derive(Debug)]
pub struct Joiner {
    config: MultilineConfig,
    open: bool,
    /// The open event's last line matched the condition (for `continue_past`).
    last_matched: bool,
    /// The language of the trace header or frame the open event holds, if any (presets).
    in_trace: Option<Preset>,
    /// A line of this stream started with a timestamp: presets then start events only there.
    timestamped: bool,
    last_line_at: Option<Instant>,
}

impl Joiner {
    /// A joiner with nothing open.
    pub fn new(config: MultilineConfig) -> Self {
        Self {
            config,
            open: false,
            last_matched: false,
            in_trace: None,
            timestamped: false,
            last_line_at: None,
        }
    }

    /// Whether an event is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// When the open event is to be sent incomplete, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open
            .then(|| self.last_line_at.map(|at| at + self.config.timeout))
            .flatten()
    }

    /// The caller sent the open event as it was (timeout, end of input, size limit).
    pub fn close(&mut self) {
        self.open = false;
        self.in_trace = None;
    }

    /// Decides what `line` does; the caller moves the bytes accordingly.
    pub fn push(&mut self, line: &[u8], now: Instant) -> Step {
        self.last_line_at = Some(now);
        match &self.config.rule {
            Rule::Preset(preset) => {
                let preset = *preset;
                let stamped = crate::timestamp::starts_with_timestamp(line);
                self.timestamped |= stamped;
                let starts = if self.timestamped {
                    stamped
                } else {
                    !continues(preset, line, self.in_trace)
                };
                let was_open = self.open;
                if starts || !was_open {
                    self.open = true;
                    self.in_trace = opens_trace(line);
                    return Step::Opened { closed: was_open };
                }
                self.in_trace = self.in_trace.or(opens_trace(line));
                Step::Joined
            }
            Rule::Patterns {
                start,
                condition,
                mode,
            } => {
                let mode = *mode;
                let matched = condition.is_match(line);
                let starts = start.is_match(line);
                if self.open {
                    let joins = match mode {
                        Mode::ContinueThrough => matched,
                        Mode::ContinuePast => self.last_matched,
                        Mode::HaltBefore => !matched,
                        Mode::HaltWith => true,
                    };
                    if joins {
                        self.last_matched = matched;
                        let complete = match mode {
                            Mode::ContinuePast => !matched,
                            Mode::HaltWith => matched,
                            _ => false,
                        };
                        if complete {
                            self.close();
                            return Step::Completed;
                        }
                        return Step::Joined;
                    }
                    self.close();
                    return match self.open_with(starts, mode, matched) {
                        true => Step::Opened { closed: true },
                        false => Step::ClosedThenAlone,
                    };
                }
                match self.open_with(starts, mode, matched) {
                    true => Step::Opened { closed: false },
                    false => Step::Alone,
                }
            }
        }
    }

    /// Opens an event at a line that matched the start pattern (`starts`) if it could be
    /// continued; returns whether it did.
    fn open_with(&mut self, starts: bool, mode: Mode, matched: bool) -> bool {
        if !starts {
            return false;
        }
        // A start line that already ends its event (a terminator, or no continuation
        // marker) is an event of its own.
        let complete = match mode {
            Mode::HaltWith => matched,
            Mode::ContinuePast => !matched,
            _ => false,
        };
        if complete {
            return false;
        }
        self.open = true;
        self.last_matched = matched;
        true
    }
}

#[cfg(test)]
mod tests;

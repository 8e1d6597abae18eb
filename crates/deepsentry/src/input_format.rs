//! The options of `train` and `eval` that say how an input's lines become events, the same
//! settings a source takes, so that a model is trained and evaluated on the events a pipeline
//! will give it.

use std::io::BufRead;
use std::path::PathBuf;

use deepsentry_core::decode::{joinable_text, Decoding};
use deepsentry_core::lines::{LineSettings, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::multiline::{detect_preset, MultilineConfig, Preset};

/// Lines of each input that `--multiline auto` looks at for stack traces.
const AUTO_SAMPLE_LINES: usize = 100_000;

/// `--decoding`, `--message-field` and `--multiline`.
#[derive(Debug, Clone, clap::Args)]
pub struct InputFormat {
    /// How each line is decoded: text, json, logfmt, syslog or cri (as a source's
    /// `decoding`).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = parse_decoding)]
    decoding: Decoding,
    /// The decoded field holding the message (default: the first of message, msg, log).
    #[arg(long, value_name = "FIELD")]
    message_field: Option<String>,
    /// Join the lines of one event: `auto` (where the input holds stack traces of Java,
    /// Python, Go or Ruby, the `any` preset, as the sidecar joins them; else none), `none`, a
    /// preset (java, python, go, ruby, any) or a YAML map of patterns, as a source's
    /// `multiline`. Score with the same joining a model was trained with.
    #[arg(long, value_name = "PRESET", default_value = "auto", value_parser = parse_multiline)]
    multiline: Multiline,
}

/// What `--multiline` says.
#[derive(Debug, Clone)]
enum Multiline {
    /// Join as the traces the input holds say, if it holds any.
    Auto,
    /// Every line is an event.
    Off,
    /// Join this way.
    Set(MultilineConfig),
}

fn parse_decoding(text: &str) -> Result<Decoding, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

fn parse_multiline(text: &str) -> Result<Multiline, String> {
    match text.trim() {
        "auto" => Ok(Multiline::Auto),
        "none" => Ok(Multiline::Off),
        _ => serde_yaml::from_str(text)
            .map(Multiline::Set)
            .map_err(|e| e.to_string()),
    }
}

impl InputFormat {
    /// The settings a source with these options would read `inputs` with (`auto` looks at
    /// their first lines).
    pub fn line_settings(&self, inputs: &[PathBuf]) -> anyhow::Result<LineSettings> {
        self.joined_by(|| {
            let mut sample = Vec::new();
            for path in inputs {
                let file = deepsentry_core::lines::open_log(path)
                    .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
                for line in std::io::BufReader::new(file)
                    .split(b'\n')
                    .take(AUTO_SAMPLE_LINES)
                {
                    sample.push(line?);
                }
            }
            let decoding = self.decoding;
            Ok(auto_multiline(
                sample.iter().map(|line| joinable_text(decoding, line)),
            ))
        })
    }

    /// The settings for `text`, lines whose labels were read off: `auto` joins their traces
    /// only where the model was trained on joined traces (`model_joined_lines`), so that it
    /// sees the events it knows; a joined event's lines share its verdict.
    pub fn labelled_line_settings(&self, text: &str, model_joined_lines: bool) -> LineSettings {
        if matches!(self.multiline, Multiline::Auto) && !model_joined_lines {
            return self.settings(None);
        }
        self.line_settings_of(text)
    }

    /// The settings for lines already read (`auto` looks at them).
    pub fn line_settings_of(&self, text: &str) -> LineSettings {
        let lines = text
            .lines()
            .take(AUTO_SAMPLE_LINES)
            .map(|line| joinable_text(self.decoding, line.as_bytes()));
        self.joined_by(|| Ok::<_, std::convert::Infallible>(auto_multiline(lines)))
            .unwrap_or_else(|never| match never {})
    }

    /// The settings with `--multiline` read: `auto` is what `detect` finds.
    fn joined_by<E>(
        &self,
        detect: impl FnOnce() -> Result<Option<MultilineConfig>, E>,
    ) -> Result<LineSettings, E> {
        let multiline = match &self.multiline {
            Multiline::Auto => detect()?,
            Multiline::Off => None,
            Multiline::Set(config) => Some(config.clone()),
        };
        Ok(self.settings(multiline))
    }

    fn settings(&self, multiline: Option<MultilineConfig>) -> LineSettings {
        LineSettings {
            multiline,
            decoding: self.decoding,
            message_field: self.message_field.clone(),
            ..LineSettings::plain(DEFAULT_MAX_LINE_BYTES)
        }
    }
}

/// `--multiline auto`: where `sample` holds stack traces, the `any` preset, said in the log.
/// Not the language's own preset: the sidecar, which cannot look ahead, joins with `any`, and
/// the two differ where a log has no timestamps (Java's preset leaves a Python `Traceback`
/// apart from the line that logged it).
fn auto_multiline<'l>(sample: impl Iterator<Item = &'l [u8]>) -> Option<MultilineConfig> {
    let language = detect_preset(sample)?;
    tracing::info!(
        language = ?language,
        "the input holds stack traces: the lines of each are joined into one event, as the \
         sidecar joins them (`any` preset; --multiline none keeps every line apart)"
    );
    Some(MultilineConfig::preset(Preset::Any))
}

//! The options of `train` and `eval` that say how an input's lines become events, the same
//! settings a source takes, so that a model is trained and evaluated on the events a pipeline
//! will give it.

use deepsentry_core::decode::Decoding;
use deepsentry_core::lines::{LineSettings, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::multiline::MultilineConfig;

/// `--decoding`, `--message-field` and `--multiline`.
#[derive(Debug, Clone, clap::Args)]
pub struct InputFormat {
    /// How each line is decoded: text, json, logfmt or syslog (as a source's `decoding`).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = parse_decoding)]
    decoding: Decoding,
    /// The decoded field holding the message (default: the first of message, msg, log).
    #[arg(long, value_name = "FIELD")]
    message_field: Option<String>,
    /// Join the lines of one event: a preset (java, python, go, ruby) or a YAML map of
    /// patterns, as a source's `multiline`.
    #[arg(long, value_name = "PRESET", value_parser = parse_multiline)]
    multiline: Option<MultilineConfig>,
}

fn parse_decoding(text: &str) -> Result<Decoding, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

fn parse_multiline(text: &str) -> Result<MultilineConfig, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

impl InputFormat {
    /// The settings a source with these options would read with.
    pub fn line_settings(&self) -> LineSettings {
        LineSettings {
            multiline: self.multiline.clone(),
            decoding: self.decoding,
            message_field: self.message_field.clone(),
            ..LineSettings::plain(DEFAULT_MAX_LINE_BYTES)
        }
    }
}

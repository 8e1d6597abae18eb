//! Loading and validating a pipeline config.
//!
//! The file is Vector-shaped YAML:
//!
//! ```yaml
//! data_dir: /var/lib/deepsentry      # state such as file checkpoints
//! api: { address: 127.0.0.1:8686 }    # /health and /metrics (off unless set)
//! sources:
//!   app:   { type: file, include: [/var/log/app.log] }
//! transforms:
//!   detect: { type: deepsentry, inputs: [app], model: models/default }
//! sinks:
//!   alerts: { type: file, inputs: [detect], path: alerts.log, encoding: alert }
//! ```
//!
//! Every error names the file, line and column, the component and the key, and lists the valid
//! choices where there is a fixed set of them. All errors of a file are reported at once.

mod graph;
mod interpolate;
mod loader;
mod locate;
mod suggest;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use interpolate::interpolate;
pub use locate::locate;
pub use suggest::suggest;

use loader::Loader;

use crate::registry::{ComponentConfig, ComponentKind};

/// The `data_dir` used when the config sets none, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".deepsentry";

/// One problem in a config file, with as much of its position as is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or a description such as `<built-in default pipeline>`).
    pub file: String,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// `sources.app`, `sinks.out`, ...
    pub component: Option<String>,
    /// The key at fault inside the component.
    pub key: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigError {
    /// A problem in `file` at `line` and `column` (where known), not tied to one component.
    pub fn in_file(
        file: &str,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    ) -> Self {
        Self {
            file: file.to_owned(),
            line,
            column,
            component: None,
            key: None,
            message,
        }
    }

    /// YAML in `file` that does not parse or does not have the expected shape: serde_yaml's
    /// message, less the position it appends, at that position.
    pub fn from_yaml(file: &str, error: &serde_yaml::Error) -> Self {
        let location = error.location();
        Self::in_file(
            file,
            location.as_ref().map(|l| l.line()),
            location.as_ref().map(|l| l.column()),
            strip_location(&error.to_string()).to_owned(),
        )
    }
}

/// Splits a serde_yaml message from the ` at line L column C` it appends.
pub(super) fn strip_location(message: &str) -> &str {
    match message.find(" at line ") {
        Some(pos) => &message[..pos],
        None => message,
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(component) = &self.component {
            write!(f, "{component}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The `${VAR}` interpolation errors of `file` (see [`interpolate`]), each at its line.
    pub fn from_interpolation(file: &str, errors: Vec<(usize, String)>) -> Self {
        Self(
            errors
                .into_iter()
                .map(|(line, message)| ConfigError::in_file(file, Some(line), None, message))
                .collect(),
        )
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// One component of a loaded pipeline.
#[derive(Debug)]
pub struct ComponentSpec {
    /// Its id (the key under `sources:`, `transforms:` or `sinks:`).
    pub id: String,
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// The plugin's `type:` name.
    pub plugin: &'static str,
    /// Ids of the components it reads from (empty for sources).
    pub inputs: Vec<String>,
    /// Its settings as written (after `${VAR}` interpolation, without `type` and `inputs`):
    /// a reload keeps a component running when they are unchanged.
    pub settings: serde_yaml::Value,
    /// Its parsed settings.
    pub config: ComponentConfig,
}

/// A validated pipeline: every type known, every key parsed, inputs resolved, no cycle.
#[derive(Debug)]
pub struct PipelineConfig {
    /// Where the config came from, for messages.
    pub origin: String,
    /// Directory for state (checkpoints).
    pub data_dir: PathBuf,
    /// The HTTP API (`/health`, `/metrics`), when `api:` is set.
    pub api: Option<ApiConfig>,
    /// Sources, transforms and sinks in file order.
    pub components: Vec<ComponentSpec>,
    /// Things that are allowed but probably unintended (an output nobody reads).
    pub warnings: Vec<String>,
    /// The environment variables interpolated into it, for [`PipelineConfig::redact`].
    pub interpolated: Interpolated,
}

/// The `${NAME}` values a config was filled with. Messages about the config name the
/// variable instead of printing its value, which may be a secret (a token in a header).
#[derive(Debug, Clone, Default)]
pub struct Interpolated(Vec<(String, String)>);

impl Interpolated {
    /// Values shorter than this are left in messages: too short to be a secret, and
    /// replacing them would garble the rest of the text.
    const MIN_REDACTED: usize = 3;

    fn record(&mut self, name: &str, value: &str) {
        if value.len() >= Self::MIN_REDACTED && !self.0.iter().any(|(n, _)| n == name) {
            self.0.push((name.to_owned(), value.to_owned()));
            // Longest first, so a value inside another is not replaced first.
            self.0.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        }
    }

    /// `message` with every interpolated value replaced by `${NAME}`.
    pub fn redact(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for (name, value) in &self.0 {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("${{{name}}}"));
            }
        }
        out
    }
}

impl PipelineConfig {
    /// `message` (an error about this config) without the values of the environment
    /// variables interpolated into it (see [`Interpolated`]).
    pub fn redact(&self, message: &str) -> String {
        self.interpolated.redact(message)
    }
}

/// The `api:` section: where the HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port`, e.g. `127.0.0.1:8686`.
    pub address: std::net::SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    api: Option<ApiConfig>,
    #[serde(default)]
    sources: Option<serde_yaml::Mapping>,
    #[serde(default)]
    transforms: Option<serde_yaml::Mapping>,
    #[serde(default)]
    sinks: Option<serde_yaml::Mapping>,
}

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads, interpolates and validates the pipeline at `path`.
pub fn load_file(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    let name = path.display().to_string();
    let read = std::fs::File::open(path).and_then(|file| {
        // A pipeline is a few KB; anything past the cap is not one (and is not read whole).
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
            &mut text,
        )?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(std::io::Error::other(format!(
                "the file is larger than {} KiB; a pipeline config is never that big",
                MAX_CONFIG_BYTES / 1024
            )));
        }
        Ok(text)
    });
    match read {
        Ok(text) => load_str(&text, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: None,
            column: None,
            component: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        }])),
    }
}

/// Interpolates and validates a pipeline given as text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<PipelineConfig, ConfigErrors> {
    Loader::new(origin).load(text)
}

/// Validates a pipeline built in code as a tree of YAML values (no text, no interpolation);
/// `origin` names it in errors, which give the component and key but no line.
pub fn load_value(value: serde_yaml::Value, origin: &str) -> Result<PipelineConfig, ConfigErrors> {
    Loader::new(origin).load_value(value)
}

#[cfg(test)]
mod tests;

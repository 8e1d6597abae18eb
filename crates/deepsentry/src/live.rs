//! The live monitor's flat config, `live_monitoring_config.yml`, turned into a pipeline:
//! one source (a file, standard input or a TCP peer), the `deepsentry` transform, the console
//! in the live monitor's format and, with `output_file`, the alert file.
//!
//! ```yaml
//! log_file: /var/log/myapp.log      # or /dev/stdin, or /dev/tcp/HOST/PORT
//! tail_mode: true                   # start at the end of the file
//! output_file: /var/log/deepsentry-alerts.log
//! threshold_multiplier: 2.5
//! window_size: 100
//! sequence_length: 10
//! batch_interval: 1.0
//! multiline: any                    # optional: a stack trace is one event
//! ```
//!
//! The environment wins over the file: `LOG_FILE` replaces `log_file`, `ANOMALY_MODEL`
//! replaces `model`.

use std::path::{Path, PathBuf};

use deepsentry_core::config::{self, ConfigError, ConfigErrors, PipelineConfig};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// The flat keys of `live_monitoring_config.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// A file path, `/dev/stdin` (or `-`), or `/dev/tcp/HOST/PORT` (a TCP peer to read from,
    /// reconnecting when it goes away). `LOG_FILE` overrides it. Default `/dev/stdin`.
    #[serde(default)]
    pub log_file: Option<String>,
    /// For a file: start at its end and watch for new lines (default), or read it from the
    /// start. A restart resumes where the last run stopped either way.
    #[serde(default = "default_tail_mode")]
    pub tail_mode: bool,
    /// The alert file: each anomaly as a `TIMESTAMP=`, `SCORE=`, `THRESHOLD=`, `MESSAGE=`,
    /// `CONTEXT_WINDOW=` block. None: the console only.
    #[serde(default)]
    pub output_file: Option<PathBuf>,
    /// Standard deviations above the mean of recent scores that make an anomaly. Omitted:
    /// the `deepsentry` transform's default (2.5).
    #[serde(default)]
    pub threshold_multiplier: Option<f64>,
    /// How many recent scores the threshold follows. Omitted: the transform's default (100).
    #[serde(default)]
    pub window_size: Option<usize>,
    /// Must match the model's; omitted, the model's is used.
    #[serde(default)]
    pub sequence_length: Option<usize>,
    /// Seconds between scoring rounds. Omitted: the transform's default (1.0).
    #[serde(default)]
    pub batch_interval: Option<f64>,
    /// The model bundle directory, or `builtin`. `ANOMALY_MODEL` overrides it. Default
    /// `builtin`: the shipped model, built into the binary.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// A regex whose match is a line's session (`blk_-?\d+` for HDFS blocks); `none`: the
    /// whole input is one session. Omitted: the key the model was trained with.
    #[serde(default)]
    pub session_key: Option<String>,
    /// Joins the lines of one event (a stack trace and the line that logged it): a preset
    /// (`any`, `java`, `python`, `go`, `ruby`) or a map of patterns, as a source's `multiline`.
    /// Omitted: every line is an event. Set it as the model's training joined its traces
    /// (`joined_lines: true` in its `model.yml`).
    #[serde(default)]
    pub multiline: Option<Value>,
    /// Where the file checkpoint is kept. Default `.deepsentry`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Serve `/health` and `/metrics` here (`127.0.0.1:8686`). Default (or empty): no API.
    #[serde(default)]
    pub api_address: Option<String>,
}

fn default_tail_mode() -> bool {
    true
}

/// Where the live monitor reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    Stdin,
    Tcp(String),
    File(String),
}

fn input(log_file: &str) -> Result<Input, String> {
    if log_file == "/dev/stdin" || log_file == "-" {
        return Ok(Input::Stdin);
    }
    if let Some(peer) = log_file.strip_prefix("/dev/tcp/") {
        return match peer.split_once('/') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Input::Tcp(format!("{host}:{port}")))
            }
            _ => Err(format!(
                "`{log_file}`: a TCP input is written /dev/tcp/HOST/PORT, e.g. /dev/tcp/localhost/9999"
            )),
        };
    }
    Ok(Input::File(log_file.to_owned()))
}

impl LiveConfig {
    /// The pipeline this config stands for; `env` looks up `LOG_FILE` and `ANOMALY_MODEL`.
    fn pipeline(&self, env: impl Fn(&str) -> Option<String>) -> Result<Value, String> {
        let log_file = env("LOG_FILE")
            .filter(|v| !v.is_empty())
            .or_else(|| self.log_file.clone())
            .unwrap_or_else(|| "/dev/stdin".to_owned());
        let model = env("ANOMALY_MODEL")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.model.clone())
            .unwrap_or_else(|| PathBuf::from(deepsentry_model::bundle::BUILTIN));
        let map = |pairs: Vec<(&str, Value)>| {
            Value::Mapping(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), v))
                    .collect::<Mapping>(),
            )
        };
        let mut source = match input(&log_file)? {
            Input::Stdin => map(vec![("type", "stdin".into())]),
            Input::Tcp(address) => map(vec![
                ("type", "tcp".into()),
                ("mode", "client".into()),
                ("address", address.into()),
            ]),
            Input::File(path) => map(vec![
                ("type", "file".into()),
                ("include", Value::Sequence(vec![path.into()])),
                (
                    "read_from",
                    if self.tail_mode { "end" } else { "beginning" }.into(),
                ),
            ]),
        };
        if let (Some(multiline), Value::Mapping(source)) = (&self.multiline, &mut source) {
            source.insert("multiline".into(), multiline.clone());
        }
        let mut detect = vec![
            ("type", "deepsentry".into()),
            ("inputs", Value::Sequence(vec!["live".into()])),
            ("model", model.display().to_string().into()),
        ];
        // Omitted keys stay omitted: the transform's own defaults apply.
        if let Some(x) = self.threshold_multiplier {
            detect.push(("threshold_multiplier", x.into()));
        }
        if let Some(n) = self.window_size {
            detect.push(("window_size", (n as u64).into()));
        }
        if let Some(x) = self.batch_interval {
            detect.push(("batch_interval", x.into()));
        }
        if let Some(n) = self.sequence_length {
            detect.push(("sequence_length", (n as u64).into()));
        }
        if let Some(key) = &self.session_key {
            detect.push(("session_key", key.clone().into()));
        }
        let mut sinks = vec![(
            "console",
            map(vec![
                ("type", "console".into()),
                ("inputs", Value::Sequence(vec!["detect".into()])),
                ("encoding", "monitor".into()),
            ]),
        )];
        if let Some(path) = &self.output_file {
            sinks.push((
                "alerts",
                map(vec![
                    ("type", "file".into()),
                    ("inputs", Value::Sequence(vec!["detect".into()])),
                    ("path", path.display().to_string().into()),
                    ("encoding", "alert".into()),
                ]),
            ));
        }
        let mut top = vec![];
        if let Some(dir) = &self.data_dir {
            top.push(("data_dir", dir.display().to_string().into()));
        }
        if let Some(address) = self.api_address.as_ref().filter(|a| !a.is_empty()) {
            top.push(("api", map(vec![("address", address.clone().into())])));
        }
        top.push(("sources", map(vec![("live", source)])));
        top.push(("transforms", map(vec![("detect", map(detect))])));
        top.push(("sinks", map(sinks)));
        Ok(map(top))
    }
}

fn error(file: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError::in_file(file, None, None, message)])
}

/// Reads the flat config at `path` and returns the pipeline it stands for, validated. Every
/// error names `path`: a mistake in the flat file at its line, and one the pipeline built
/// from it has (a model that does not load, a port in use) at the component and key.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        error(
            &name,
            format!("cannot read the live monitoring config: {e}"),
        )
    })?;
    let text = config::interpolate(&text, |var| std::env::var(var).ok())
        .map_err(|errors| ConfigErrors::from_interpolation(&name, errors))?;
    let live: LiveConfig = if text.trim().is_empty() {
        serde_yaml::from_str("{}").expect("defaults")
    } else {
        serde_yaml::from_str(&text)
            .map_err(|e| ConfigErrors(vec![ConfigError::from_yaml(&name, &e)]))?
    };
    let pipeline = live
        .pipeline(|var| std::env::var(var).ok())
        .map_err(|message| error(&name, message))?;
    // Built in code, not written by the user: errors name their file, and the component and
    // key of the pipeline these settings make.
    config::load_value(pipeline, &name).map_err(|ConfigErrors(errors)| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|mut e| {
                    e.message = format!("{} (in the pipeline these settings make)", e.message);
                    e
                })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(yaml: &str, env: &[(&str, &str)]) -> Value {
        let live: LiveConfig = serde_yaml::from_str(yaml).unwrap();
        live.pipeline(|var| {
            env.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    #[test]
    fn a_file_in_tail_mode_with_an_alert_file() {
        let p = pipeline(
            "log_file: /var/log/app.log\noutput_file: /tmp/alerts.log\nthreshold_multiplier: 3.0\n\
             window_size: 200\nsequence_length: 10\nbatch_interval: 0.5\n",
            &[],
        );
        assert_eq!(p["sources"]["live"]["type"], "file");
        assert_eq!(p["sources"]["live"]["include"][0], "/var/log/app.log");
        assert_eq!(p["sources"]["live"]["read_from"], "end");
        let detect = &p["transforms"]["detect"];
        assert_eq!(detect["threshold_multiplier"], 3.0);
        assert_eq!(detect["window_size"], 200);
        assert_eq!(detect["sequence_length"], 10);
        assert_eq!(detect["batch_interval"], 0.5);
        assert_eq!(detect["model"], "builtin");
        assert_eq!(p["sinks"]["console"]["encoding"], "monitor");
        assert_eq!(p["sinks"]["alerts"]["encoding"], "alert");
        assert_eq!(p["sinks"]["alerts"]["path"], "/tmp/alerts.log");
        assert!(p["sources"]["live"].get("multiline").is_none());
        // A stack trace is one event where the config says so.
        let p = pipeline("log_file: /var/log/app.log\nmultiline: java\n", &[]);
        assert_eq!(p["sources"]["live"]["multiline"], "java");
    }

    #[test]
    fn stdin_tcp_and_the_environment() {
        let p = pipeline("{}", &[]);
        assert_eq!(p["sources"]["live"]["type"], "stdin");
        assert!(p["transforms"]["detect"].get("window_size").is_none());
        assert!(p["sinks"].get("alerts").is_none());
        let p = pipeline("log_file: /dev/tcp/localhost/9999\n", &[]);
        assert_eq!(p["sources"]["live"]["type"], "tcp");
        assert_eq!(p["sources"]["live"]["mode"], "client");
        assert_eq!(p["sources"]["live"]["address"], "localhost:9999");
        let p = pipeline(
            "log_file: /dev/stdin\ntail_mode: false\nmodel: /m\n",
            &[
                ("LOG_FILE", "/srv/app.log"),
                ("ANOMALY_MODEL", "/data/models/x"),
            ],
        );
        assert_eq!(p["sources"]["live"]["include"][0], "/srv/app.log");
        assert_eq!(p["sources"]["live"]["read_from"], "beginning");
        assert_eq!(p["transforms"]["detect"]["model"], "/data/models/x");
        let live: LiveConfig = serde_yaml::from_str("log_file: /dev/tcp/localhost\n").unwrap();
        let err = live.pipeline(|_| None).unwrap_err();
        assert!(err.contains("/dev/tcp/HOST/PORT"), "{err}");
    }

    #[test]
    fn a_typo_names_the_line_and_the_valid_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live_monitoring_config.yml");
        std::fs::write(&path, "log_file: /dev/stdin\nthreshold_multiplyer: 3\n").unwrap();
        let errors = load(&path).unwrap_err();
        let e = &errors.0[0];
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("threshold_multiplyer"), "{e}");
        assert!(e.message.contains("`threshold_multiplier`"), "{e}");
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_config_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../live_monitoring_config.yml"
        ));
        let pipeline = load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pipeline.components.len(), 3, "stdin -> detect -> console");
        if std::env::var_os("DEEPSENTRY_API_ADDRESS").is_none() {
            assert_eq!(pipeline.api, None);
        }
    }
}

//! The `http` source's keys, their checks, and building the source.

use crate::HttpSource;
use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::decode::Decoding;
use deepsentry_core::lines::{LineSettings, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::net::check_host_port;
use deepsentry_core::timestamp::EventTime;
use deepsentry_core::{BuildContext, Source, SourceConfig};
use serde::Deserialize;
use tokio::net::TcpListener;

/// A setting that must never reach a log line, such as a token: its `Debug` form is redacted.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub(crate) String);

impl Secret {
    /// The secret itself, for comparing: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Settings of the `http` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The address to listen on (`0.0.0.0:8080`).
    pub address: String,
    /// The only path taken (`/ingest`); other paths get `404`. Default: every path.
    #[serde(default)]
    pub path: Option<String>,
    /// How each line (or JSON array element) is decoded: `text` (default), `json`, `logfmt`
    /// or `syslog`. With `json`, a body may also be one JSON array of objects.
    #[serde(default)]
    pub decoding: Decoding,
    /// The decoded field holding the message. Default: the first of `message`, `msg`, `log`.
    #[serde(default)]
    pub message_field: Option<String>,
    /// Where an event's time comes from: `auto` (default) or `arrival`.
    #[serde(default)]
    pub timestamp: EventTime,
    /// The largest body taken, in bytes, as sent and once inflated; larger ones get `413`.
    /// Default 10 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Lines longer than this many bytes are truncated (and counted). Default 102400.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How long a request's events may wait to be handed on to the pipeline before the request
    /// is answered `503` (the pipeline is backed up), in milliseconds. Default 1000.
    #[serde(default = "default_backpressure_timeout_ms")]
    pub backpressure_timeout_ms: u64,
    /// When set, every request must carry `Authorization: Bearer <token>`; others get `401`.
    /// Write it as `"${VAR}"` to keep it out of the config file.
    #[serde(default)]
    pub auth_token: Option<Secret>,
}

pub(crate) fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

pub(crate) fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

pub(crate) fn default_backpressure_timeout_ms() -> u64 {
    1000
}

deepsentry_core::register_source!(
    "http",
    "Takes events POSTed over HTTP (text, NDJSON, JSON arrays, gzip); answers once delivered",
    HttpSourceConfig
);

impl HttpSourceConfig {
    /// How request bodies become events.
    pub(crate) fn line_settings(&self) -> LineSettings {
        LineSettings {
            max_line_bytes: self.max_line_bytes,
            multiline: None,
            decoding: self.decoding,
            message_field: self.message_field.clone(),
            timestamp: self.timestamp,
        }
    }

    /// Every setting checked, without opening anything.
    pub(crate) fn checked_settings(&self) -> anyhow::Result<()> {
        check_host_port(&self.address)?;
        if let Some(path) = &self.path {
            anyhow::ensure!(
                path.starts_with('/'),
                "`path` must start with `/`, not `{path}`"
            );
        }
        anyhow::ensure!(
            self.max_body_bytes >= 1,
            "`max_body_bytes` must be at least 1"
        );
        anyhow::ensure!(
            self.max_line_bytes >= 1,
            "`max_line_bytes` must be at least 1"
        );
        anyhow::ensure!(
            self.backpressure_timeout_ms >= 1,
            "`backpressure_timeout_ms` must be at least 1"
        );
        if let Some(token) = &self.auth_token {
            // An unset variable behind `${VAR:-}` must not turn into "no token needed".
            anyhow::ensure!(
                !token.expose().trim().is_empty(),
                "`auth_token` is empty; set it (an environment variable that is not set?) or \
                 remove the key"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl SourceConfig for HttpSourceConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        self.checked_settings()?;
        let listener = TcpListener::bind(&self.address)
            .await
            .with_context(|| format!("cannot listen on {}", self.address))?;
        Ok(Box::new(HttpSource {
            config: self.clone(),
            listener,
        }))
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        self.checked_settings()
    }
}

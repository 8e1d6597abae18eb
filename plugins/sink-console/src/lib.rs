//! The `console` sink: writes events to stdout (or stderr), one line each.

use async_trait::async_trait;
use deepsentry_core::codec::{encode_batch, Encoding, EncodingConfig, SinkEncodings};
use deepsentry_core::{BuildContext, Sink, SinkConfig, SinkContext};
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What the console sink writes: the live monitor's line by default (`[time] message` for
/// events without a score), the raw message, JSON objects, or alert blocks.
pub struct ConsoleEncodings;

impl SinkEncodings for ConsoleEncodings {
    const SUPPORTED: &'static [Encoding] = &[
        Encoding::Monitor,
        Encoding::Text,
        Encoding::Json,
        Encoding::Alert,
    ];
    const DEFAULT: Encoding = Encoding::Monitor;
}

/// Which stream the console sink writes to.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleTarget {
    /// Standard output (the default).
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

/// Settings of the `console` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSinkConfig {
    /// `monitor` (default), `text`, `json` or `alert`. `format`, its former name, is still
    /// read.
    #[serde(default, alias = "format")]
    pub encoding: EncodingConfig<ConsoleEncodings>,
    /// `stdout` (default) or `stderr`.
    #[serde(default)]
    pub target: ConsoleTarget,
}

deepsentry_core::register_sink!(
    "console",
    "Writes events to stdout or stderr (encodings: monitor, text, json, alert)",
    ConsoleSinkConfig
);

#[async_trait]
impl SinkConfig for ConsoleSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing.
        self.build(cx).await.map(drop)
    }
}

#[async_trait]
impl Sink for ConsoleSinkConfig {
    async fn run(self: Box<Self>, mut cx: SinkContext) -> anyhow::Result<()> {
        let mut writer: Box<dyn AsyncWrite + Unpin + Send> = match self.target {
            ConsoleTarget::Stdout => Box::new(tokio::io::stdout()),
            ConsoleTarget::Stderr => Box::new(tokio::io::stderr()),
        };
        let delivered = cx.metrics.counter("events_delivered");
        let dropped = cx.metrics.dropped("output_closed");
        let encoding = self.encoding.get();
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(batch) = cx.input.recv().await {
            buf.clear();
            encode_batch(encoding, &batch, &mut buf);
            let written = async {
                writer.write_all(&buf).await?;
                writer.flush().await
            }
            .await;
            if let Err(e) = written {
                // The reader of our output is gone (a closed pipe): nothing more can be shown.
                // The batch is not settled: its lines are read again on the next start.
                dropped.add(batch.len() as u64);
                anyhow::bail!(
                    "cannot write to {:?} ({e}); dropped {} events",
                    self.target,
                    batch.len()
                );
            }
            delivered.add(batch.len() as u64);
            batch.delivered();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_names_and_defaults() {
        let config: ConsoleSinkConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(config.encoding.get(), Encoding::Monitor);
        assert_eq!(config.target, ConsoleTarget::Stdout);
        let config: ConsoleSinkConfig = serde_yaml::from_str("encoding: json").unwrap();
        assert_eq!(config.encoding.get(), Encoding::Json);
        // The former key name.
        let config: ConsoleSinkConfig = serde_yaml::from_str("format: text").unwrap();
        assert_eq!(config.encoding.get(), Encoding::Text);
        let err = serde_yaml::from_str::<ConsoleSinkConfig>("encoding: json_array").unwrap_err();
        assert!(err
            .to_string()
            .contains("expected one of `monitor`, `text`, `json`, `alert`"));
    }
}

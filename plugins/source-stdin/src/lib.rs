//! The `stdin` source: newline-delimited lines from standard input (joined into multiline
//! events and decoded where configured). End of input drains the
//! pipeline, so `app 2>&1 | deepsentry run -c pipeline.yml` ends when the app does.

use async_trait::async_trait;
use deepsentry_core::decode::Decoding;
use deepsentry_core::framing::LineFramer;
use deepsentry_core::lines::{pump, LineDecoder, LineSettings, PumpEnd, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::multiline::MultilineConfig;
use deepsentry_core::timestamp::EventTime;
use deepsentry_core::{BuildContext, Origin, Source, SourceConfig, SourceContext};
use serde::Deserialize;

/// Settings of the `stdin` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// Lines longer than this many bytes are truncated (and counted). Default 102400.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Joins the lines of one event, such as a stack trace: a preset (`java`, `python`, `go`,
    /// `ruby`, `any`) or `{start_pattern, condition_pattern, mode, timeout_ms}`. Default: off.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// How each line (or joined event) is decoded: `text` (default), `json`, `logfmt` or
    /// `syslog` (RFC 5424 and 3164).
    #[serde(default)]
    pub decoding: Decoding,
    /// The decoded field holding the message. Default: the first of `message`, `msg`, `log`.
    #[serde(default)]
    pub message_field: Option<String>,
    /// Where an event's time comes from: `auto` (default: a decoded `timestamp`, `time`, `ts`
    /// or `@timestamp` field, else a timestamp leading the line, else arrival) or `arrival`.
    #[serde(default)]
    pub timestamp: EventTime,
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

deepsentry_core::register_source!(
    "stdin",
    "Reads lines from standard input; the pipeline ends at end of input",
    StdinSourceConfig
);

#[async_trait]
impl SourceConfig for StdinSourceConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        Ok(Box::new(self.clone()))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing.
        self.build(cx).await.map(drop)
    }
}

#[async_trait]
impl Source for StdinSourceConfig {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> anyhow::Result<()> {
        let mut decoder = LineDecoder::new(
            Origin::new(cx.id.as_str(), "stdin"),
            &cx.metrics,
            &LineSettings {
                max_line_bytes: self.max_line_bytes,
                multiline: self.multiline.clone(),
                decoding: self.decoding,
                message_field: self.message_field.clone(),
                timestamp: self.timestamp,
            },
        );
        let mut framer = LineFramer::new(self.max_line_bytes);
        let end = pump(
            tokio::io::stdin(),
            &mut framer,
            &mut decoder,
            &mut cx.out,
            &cx.shutdown,
        )
        .await;
        match end {
            Ok(PumpEnd::Eof) => tracing::info!(source = %cx.id, "end of standard input"),
            Ok(PumpEnd::Shutdown) => {}
            Ok(PumpEnd::ReadError(e)) => anyhow::bail!("cannot read standard input: {e}"),
            Err(closed) => anyhow::bail!(closed),
        }
        Ok(())
    }
}

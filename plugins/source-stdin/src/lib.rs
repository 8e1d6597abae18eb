//! The `stdin` source: newline-delimited lines from standard input. End of input drains the
//! pipeline, so `app 2>&1 | deepsentry run -c pipeline.yml` ends when the app does.

use async_trait::async_trait;
use deepsentry_core::framing::LineFramer;
use deepsentry_core::lines::{pump, LineDecoder, PumpEnd, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::{BuildContext, Origin, Source, SourceConfig, SourceContext};
use serde::Deserialize;

/// Settings of the `stdin` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// Lines longer than this many bytes are truncated (and counted). Default 102400.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
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
        let decoder = LineDecoder::new(
            Origin::new(cx.id.as_str(), "stdin"),
            &cx.metrics,
            self.max_line_bytes,
        );
        let mut framer = LineFramer::new(self.max_line_bytes);
        let end = pump(
            tokio::io::stdin(),
            &mut framer,
            &decoder,
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

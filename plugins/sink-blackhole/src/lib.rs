//! The `blackhole` sink: counts events and throws them away, for benchmarks and dry runs.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use deepsentry_core::{BuildContext, Sink, SinkConfig, SinkContext};
use serde::Deserialize;

/// Settings of the `blackhole` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {
    /// Log the running count every this many seconds; 0 (the default) logs only the total at
    /// the end.
    #[serde(default)]
    pub print_interval_secs: u64,
}

deepsentry_core::register_sink!(
    "blackhole",
    "Counts events and discards them (benchmarks, dry runs)",
    BlackholeSinkConfig
);

#[async_trait]
impl SinkConfig for BlackholeSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing.
        self.build(cx).await.map(drop)
    }
}

#[async_trait]
impl Sink for BlackholeSinkConfig {
    async fn run(self: Box<Self>, mut cx: SinkContext) -> anyhow::Result<()> {
        let delivered = cx.metrics.counter("events_delivered");
        let bytes = cx.metrics.counter("bytes_received");
        let started = Instant::now();
        let interval = Duration::from_secs(self.print_interval_secs);
        let mut last_print = started;
        let mut total = 0u64;
        while let Some(batch) = cx.input.recv().await {
            let size: usize = batch.events.iter().map(|e| e.message_bytes().len()).sum();
            bytes.add(size as u64);
            delivered.add(batch.len() as u64);
            total += batch.len() as u64;
            batch.delivered();
            if !interval.is_zero() && last_print.elapsed() >= interval {
                last_print = Instant::now();
                tracing::info!(sink = %cx.id, events = total, "blackhole running count");
            }
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            sink = %cx.id,
            events = total,
            seconds = format!("{secs:.3}"),
            events_per_sec = format!("{:.0}", total as f64 / secs.max(1e-9)),
            "blackhole total"
        );
        Ok(())
    }
}

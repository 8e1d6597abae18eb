//! The `demo` source: realistic HDFS-style log lines in per-block sessions, with occasional
//! injected faults, so a pipeline runs with no input at all. The lines come from
//! [`deepsentry_loggen`], which the project's tests and benchmarks use as their fixtures too.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use deepsentry_core::{
    Batch, BuildContext, Event, Origin, Source, SourceConfig, SourceContext, MAX_BATCH_EVENTS,
};
use serde::Deserialize;

pub use deepsentry_loggen::{Fault, GeneratedLine, HdfsGenerator};

/// Settings of the `demo` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSourceConfig {
    /// Lines per second; 0 generates as fast as the pipeline takes them. Default 10.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Stop after this many lines (the pipeline then drains and exits). Default: never stop.
    #[serde(default)]
    pub count: Option<u64>,
    /// Fraction of block sessions with an injected fault, 0 to 1. Default 0.05.
    #[serde(default = "default_fault_rate")]
    pub fault_rate: f64,
    /// Seed for a reproducible stream. Default: a new stream each run.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Blocks in flight at once (sessions interleave). Default 8.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// Stamp lines with the simulated 2008 clock of the HDFS data set instead of the current
    /// time. Default: simulated when `rate` is 0 (bulk fixtures), current time otherwise.
    #[serde(default)]
    pub simulated_clock: Option<bool>,
}

fn default_rate() -> f64 {
    10.0
}

fn default_fault_rate() -> f64 {
    0.05
}

fn default_sessions() -> usize {
    8
}

deepsentry_core::register_source!(
    "demo",
    "Generates realistic HDFS log sessions with injected faults (no input needed)",
    DemoSourceConfig
);

#[async_trait]
impl SourceConfig for DemoSourceConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        anyhow::ensure!(
            self.rate.is_finite() && self.rate >= 0.0,
            "`rate` must be 0 (unlimited) or a positive number of lines per second, not {}",
            self.rate
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.fault_rate),
            "`fault_rate` must be between 0 and 1, not {}",
            self.fault_rate
        );
        Ok(Box::new(self.clone()))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing.
        self.build(cx).await.map(drop)
    }
}

#[async_trait]
impl Source for DemoSourceConfig {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> anyhow::Result<()> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        let simulated = self.simulated_clock.unwrap_or(self.rate == 0.0);
        let mut generator = HdfsGenerator::new(seed, self.fault_rate, self.sessions);
        let origin = Origin::new(cx.id.as_str(), "demo");
        let received = cx.metrics.counter("events_received");
        let mut remaining = self.count.unwrap_or(u64::MAX);
        let started = Instant::now();
        let mut produced = 0u64;
        while remaining > 0 && !cx.shutdown.is_triggered() {
            let wanted = if self.rate > 0.0 {
                // Catch up to where the clock says we should be, in ticks of 100 ms at most.
                let due = (started.elapsed().as_secs_f64() * self.rate) as u64 + 1;
                if due <= produced {
                    let wait = Duration::from_secs_f64(
                        ((produced as f64) / self.rate - started.elapsed().as_secs_f64())
                            .clamp(0.001, 0.1),
                    );
                    tokio::select! {
                        _ = cx.shutdown.wait() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
                due - produced
            } else {
                u64::MAX
            };
            let n = wanted.min(remaining).min(MAX_BATCH_EVENTS as u64) as usize;
            let now = Utc::now();
            let events: Vec<Event> = (0..n)
                .map(|_| {
                    let line = if simulated {
                        generator.next_line()
                    } else {
                        generator.next_line_at(now.timestamp())
                    };
                    Event::from_str(&line.text, now, origin.clone())
                })
                .collect();
            produced += n as u64;
            remaining -= n as u64;
            received.add(n as u64);
            if cx.out.send(Batch::new(events)).await.is_err() {
                break;
            }
        }
        tracing::info!(source = %cx.id, lines = produced, "demo source done");
        Ok(())
    }
}

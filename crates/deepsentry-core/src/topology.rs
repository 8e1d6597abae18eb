//! Wiring a validated config into running tasks, and stopping them cleanly.
//!
//! Every transform and sink owns one bounded channel; each producer (source or transform) gets
//! an [`Output`] holding a sender to the channel of every component that lists it in `inputs`.
//! A component's task ends when its work ends: a source at end of input or on shutdown; a
//! transform or sink once every producer feeding it has ended and its channel is drained. So
//! stopping the sources drains the whole graph in order, with nothing lost in between.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::batch::Batch;
use crate::component::{BuildContext, SinkContext, SourceContext, TransformContext};
use crate::config::PipelineConfig;
use crate::health::{ComponentState, Health};
use crate::metrics::Metrics;
use crate::output::Output;
use crate::registry::{ComponentConfig, ComponentKind};
use crate::shutdown::ShutdownSignal;
use crate::CHANNEL_CAPACITY;

/// How a pipeline run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every component finished on its own; `failed` lists those that returned an error.
    Finished {
        /// Components that stopped with an error (already logged).
        failed: Vec<String>,
    },
    /// The grace period after a shutdown request ran out; these components were still busy
    /// and were stopped without finishing.
    Forced {
        /// Components still running at the deadline.
        unfinished: Vec<String>,
    },
}

/// Builds every component of `config`, runs the pipeline until it ends by itself (all sources
/// done) or `shutdown` fires, then waits up to `grace_period` for the graph to drain.
///
/// A component that fails to build (a port in use, a missing model) stops the start-up with an
/// error naming it; nothing has run at that point. `health` follows each component's state
/// while it runs.
pub async fn run(
    config: PipelineConfig,
    metrics: Metrics,
    health: Health,
    shutdown: ShutdownSignal,
    grace_period: Duration,
) -> anyhow::Result<RunOutcome> {
    let mut senders: BTreeMap<String, mpsc::Sender<Batch>> = BTreeMap::new();
    let mut receivers: BTreeMap<String, mpsc::Receiver<Batch>> = BTreeMap::new();
    for spec in &config.components {
        if spec.kind != ComponentKind::Source {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            // The fill of each input channel, read when the metrics are; a weak sender does
            // not keep the channel open.
            let weak = tx.downgrade();
            metrics.probe(
                &spec.id,
                "input_channel_batches",
                Box::new(move || {
                    weak.upgrade()
                        .map(|tx| (tx.max_capacity() - tx.capacity()) as f64)
                }),
            );
            senders.insert(spec.id.clone(), tx);
            receivers.insert(spec.id.clone(), rx);
        }
    }
    let output_of = |id: &str| {
        let targets = config
            .components
            .iter()
            .filter(|c| c.inputs.iter().any(|i| i == id))
            .map(|c| {
                let received = metrics.counter(&c.id, "events_received");
                (c.id.clone(), senders[&c.id].clone(), received)
            })
            .collect();
        Output::counted(targets, metrics.counter(id, "events_sent"))
    };

    enum Ready {
        Source(Box<dyn crate::Source>, SourceContext),
        Transform(Box<dyn crate::Transform>, TransformContext),
        Sink(Box<dyn crate::Sink>, SinkContext),
    }
    let mut ready = Vec::new();
    for spec in &config.components {
        let cx = BuildContext {
            id: spec.id.clone(),
            data_dir: config.data_dir.clone(),
            metrics: metrics.clone(),
        };
        let what = || format!("{}.{}: cannot start", spec.kind.section(), spec.id);
        let component_metrics = metrics.component(&spec.id);
        let item = match &spec.config {
            ComponentConfig::Source(c) => Ready::Source(
                c.build(&cx).await.with_context(what)?,
                SourceContext {
                    id: spec.id.clone(),
                    out: output_of(&spec.id),
                    shutdown: shutdown.clone(),
                    metrics: component_metrics,
                },
            ),
            ComponentConfig::Transform(c) => {
                let built = c.build(&cx).await.with_context(what)?;
                let input = receivers
                    .remove(&spec.id)
                    .expect("every consumer has a channel");
                Ready::Transform(
                    built,
                    TransformContext {
                        id: spec.id.clone(),
                        input,
                        out: output_of(&spec.id),
                        shutdown: shutdown.clone(),
                        metrics: component_metrics,
                    },
                )
            }
            ComponentConfig::Sink(c) => {
                let built = c.build(&cx).await.with_context(what)?;
                let input = receivers
                    .remove(&spec.id)
                    .expect("every consumer has a channel");
                Ready::Sink(
                    built,
                    SinkContext {
                        id: spec.id.clone(),
                        input,
                        metrics: component_metrics,
                    },
                )
            }
        };
        ready.push((format!("{}.{}", spec.kind.section(), spec.id), item));
    }
    // Only the outputs hold senders now: a channel closes when its last producer ends.
    drop(senders);

    let mut tasks = JoinSet::new();
    let mut running: BTreeMap<tokio::task::Id, String> = BTreeMap::new();
    for (name, item) in ready {
        let handle = match item {
            Ready::Source(source, cx) => tasks.spawn(source.run(cx)),
            Ready::Transform(transform, cx) => tasks.spawn(transform.run(cx)),
            Ready::Sink(sink, cx) => tasks.spawn(sink.run(cx)),
        };
        health.set(&name, ComponentState::Running);
        running.insert(handle.id(), name);
    }
    tracing::info!(
        config = %config.origin,
        components = running.len(),
        "pipeline started"
    );

    let mut failed = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let Some(joined) = joined else { break };
                let (id, result) = match joined {
                    Ok((id, result)) => (id, result),
                    Err(e) => (e.id(), Err(anyhow::anyhow!("task panicked: {e}"))),
                };
                let name = running.remove(&id).unwrap_or_default();
                match result {
                    Ok(()) => {
                        tracing::debug!(component = %name, "finished");
                        health.set(&name, ComponentState::Finished);
                    }
                    Err(e) => {
                        tracing::error!(component = %name, "stopped with an error: {e:#}");
                        health.set(&name, ComponentState::Failed(format!("{e:#}")));
                        failed.push(name);
                    }
                }
            }
            _ = shutdown.wait(), if deadline.is_none() => {
                tracing::info!(
                    grace_period_secs = grace_period.as_secs_f64(),
                    "shutdown requested: sources stop, the pipeline drains"
                );
                deadline = Some(Instant::now() + grace_period);
            }
            _ = until_deadline => {
                let unfinished: Vec<String> = running.values().cloned().collect();
                tracing::error!(
                    still_running = ?unfinished,
                    "grace period elapsed before the pipeline drained; stopping now"
                );
                tasks.abort_all();
                return Ok(RunOutcome::Forced { unfinished });
            }
        }
    }
    Ok(RunOutcome::Finished { failed })
}

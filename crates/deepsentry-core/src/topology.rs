//! Wiring a validated config into running tasks, changing the running pipeline when the config
//! is reloaded, and stopping it cleanly.
//!
//! Every transform and sink owns one bounded channel; each producer (source or transform) gets
//! an [`Output`] holding a sender to the channel of every component that lists it in `inputs`.
//! A component's task ends when its work ends: a source at end of input or on shutdown; a
//! transform or sink once every producer feeding it has ended and its channel is drained. So
//! stopping the sources drains the whole graph in order, with nothing lost in between.
//!
//! A reload compares the new config with the running one. A component whose type, settings,
//! inputs, consumers and fingerprint (a model's files) are all unchanged keeps running,
//! untouched. Every changed or new transform and sink (and new source) is built first: if one
//! fails (a model that does not load), the reload is rejected and nothing changes. Then each
//! changed component is stopped (a source stops reading; a transform or sink is released from
//! its channel and finishes what it already took) and its successor starts on the same
//! channel, so nothing queued meanwhile is lost. A changed source is built once its
//! predecessor has stopped, since it may listen on the same port.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::component::BuildContext;
use crate::config::{ComponentSpec, PipelineConfig};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::output::Output;
use crate::registry::{ComponentConfig, ComponentKind};
use crate::shutdown::ShutdownSignal;

mod builder;
mod diff;
mod running;

use diff::Setup;

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
/// done) or `shutdown` fires, then waits up to `grace_period` for the graph to drain. Each
/// config received on `reloads` replaces the running one (see the module docs); a config that
/// cannot be applied is logged and the running pipeline goes on.
///
/// A component that fails to build at start (a port in use, a missing model) stops the
/// start-up with an error naming it; nothing has run at that point. `health` follows each
/// component's state while it runs.
pub async fn run(
    config: PipelineConfig,
    metrics: Metrics,
    health: Health,
    shutdown: ShutdownSignal,
    grace_period: Duration,
    mut reloads: mpsc::Receiver<PipelineConfig>,
) -> anyhow::Result<RunOutcome> {
    let mut pipeline = Pipeline {
        metrics,
        health,
        shutdown: shutdown.clone(),
        data_dir: config.data_dir.clone(),
        channels: BTreeMap::new(),
        instances: BTreeMap::new(),
        successors: BTreeMap::new(),
        retiring: BTreeMap::new(),
        tasks: JoinSet::new(),
        generation: 0,
    };
    let origin = config.origin.clone();
    pipeline.apply(config).await?;
    tracing::info!(
        config = %origin,
        components = pipeline.instances.len(),
        "pipeline started"
    );

    let mut failed = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut reloads_open = true;
    loop {
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = pipeline.tasks.join_next() => {
                let Some(joined) = joined else { break };
                let (id, generation, result) = match joined {
                    Ok(done) => done,
                    // Every task catches its own panic (see `spawn`); this is an abort.
                    Err(e) => {
                        tracing::error!("a component task was aborted: {e}");
                        continue;
                    }
                };
                if let Some(name) = pipeline.ended(&id, generation, result).await {
                    if !shutdown.is_triggered() {
                        // The policy for a failed component: drain what can be delivered,
                        // checkpoint it, and exit non-zero so a supervisor restarts the whole
                        // process; what was lost is read again then.
                        tracing::error!(
                            component = %name,
                            "a component failed: the pipeline drains what it can and stops \
                             with exit status 1"
                        );
                        shutdown.trigger();
                    }
                    failed.push(name);
                }
            }
            config = reloads.recv(), if reloads_open && deadline.is_none() => match config {
                Some(config) => pipeline.reload(config).await,
                None => reloads_open = false,
            },
            _ = shutdown.wait(), if deadline.is_none() => {
                tracing::info!(
                    grace_period_secs = grace_period.as_secs_f64(),
                    "shutdown requested: sources stop, the pipeline drains"
                );
                deadline = Some(Instant::now() + grace_period);
            }
            _ = until_deadline => {
                let unfinished: Vec<String> = pipeline
                    .instances
                    .values()
                    .filter(|i| i.running)
                    .map(|i| i.name.clone())
                    .collect();
                tracing::error!(
                    still_running = ?unfinished,
                    "grace period elapsed before the pipeline drained; stopping now"
                );
                pipeline.tasks.abort_all();
                return Ok(RunOutcome::Forced { unfinished });
            }
        }
    }
    Ok(RunOutcome::Finished { failed })
}

/// Checks every component of `config` the way [`run`] builds it (models loaded, every key
/// judged), without side effects: no socket opened, no file created, no client started.
/// Returns one error per component that would not start, naming it.
pub async fn check(config: &PipelineConfig) -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    for spec in &config.components {
        let cx = BuildContext {
            id: spec.id.clone(),
            data_dir: config.data_dir.clone(),
            metrics: Metrics::default(),
        };
        let checked = match &spec.config {
            ComponentConfig::Source(c) => c.check(&cx).await,
            ComponentConfig::Transform(c) => c.check(&cx).await,
            ComponentConfig::Sink(c) => c.check(&cx).await,
        };
        if let Err(e) = checked {
            errors.push(e.context(format!("{}: cannot start", name_of(spec.kind, &spec.id))));
        }
    }
    errors
}

/// A component built and ready to run.
enum Built {
    Source(Box<dyn crate::Source>),
    Transform(Box<dyn crate::Transform>),
    Sink(Box<dyn crate::Sink>),
}

/// A transform's or sink's channel; it outlives the instances that read it.
struct Channel {
    /// Does not keep the channel open: it closes once every producer's output is gone.
    sender: mpsc::WeakSender<Batch>,
    receiver: Arc<Mutex<mpsc::Receiver<Batch>>>,
}

/// The running (or finished) instance of a component.
struct Instance {
    /// `sources.app`, for logs and health.
    name: String,
    generation: u64,
    setup: Setup,
    running: bool,
    /// Stops a source; tells a transform it is stopping, not at the end of its input.
    stop: ShutdownSignal,
    /// Lets a transform or sink go of its channel.
    release: CancellationToken,
}

/// A component waiting for its predecessor to stop.
struct Successor {
    spec: ComponentSpec,
    setup: Setup,
    /// Built already (transforms, sinks), or built once the predecessor is gone (sources).
    built: Option<Built>,
    output: Option<Output>,
}

type TaskResult = (String, u64, anyhow::Result<()>);

struct Pipeline {
    metrics: Metrics,
    health: Health,
    shutdown: ShutdownSignal,
    data_dir: PathBuf,
    channels: BTreeMap<String, Channel>,
    instances: BTreeMap<String, Instance>,
    successors: BTreeMap<String, Successor>,
    /// Instances of removed components still finishing, by (id, generation), with their name.
    retiring: BTreeMap<(String, u64), String>,
    tasks: JoinSet<TaskResult>,
    generation: u64,
}

fn name_of(kind: ComponentKind, id: &str) -> String {
    format!("{}.{id}", kind.section())
}

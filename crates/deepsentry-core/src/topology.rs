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

use anyhow::Context;
use futures::FutureExt;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::component::{BuildContext, SinkContext, SourceContext, TransformContext};
use crate::config::{ComponentSpec, PipelineConfig};
use crate::health::{ComponentState, Health};
use crate::input::Input;
use crate::metrics::Metrics;
use crate::output::Output;
use crate::registry::{ComponentConfig, ComponentKind};
use crate::shutdown::ShutdownSignal;
use crate::CHANNEL_CAPACITY;

mod diff;

use diff::{action, removed, setups, Action, Changes, Current, Setup};

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

impl Pipeline {
    /// A sender to `id`'s channel, creating the channel when it has none or its old one closed.
    fn sender(&mut self, id: &str) -> mpsc::Sender<Batch> {
        if let Some(sender) = self.channels.get(id).and_then(|c| c.sender.upgrade()) {
            return sender;
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        // The fill of the channel, read when the metrics are.
        let weak = tx.downgrade();
        self.metrics.probe(
            id,
            "input_channel_batches",
            Box::new(move || {
                weak.upgrade()
                    .map(|tx| (tx.max_capacity() - tx.capacity()) as f64)
            }),
        );
        self.channels.insert(
            id.to_owned(),
            Channel {
                sender: tx.downgrade(),
                receiver: Arc::new(Mutex::new(rx)),
            },
        );
        tx
    }

    fn output(
        &self,
        id: &str,
        consumers: &BTreeMap<String, mpsc::Sender<Batch>>,
        of: &[String],
    ) -> Output {
        let targets = of
            .iter()
            .map(|c| {
                let received = self.metrics.counter(c, "events_received");
                (c.clone(), consumers[c].clone(), received)
            })
            .collect();
        Output::counted(targets, self.metrics.counter(id, "events_sent"))
    }

    async fn build(&self, spec: &ComponentSpec) -> anyhow::Result<Built> {
        let cx = BuildContext {
            id: spec.id.clone(),
            data_dir: self.data_dir.clone(),
            metrics: self.metrics.clone(),
        };
        let what = || format!("{}: cannot start", name_of(spec.kind, &spec.id));
        Ok(match &spec.config {
            ComponentConfig::Source(c) => Built::Source(c.build(&cx).await.with_context(what)?),
            ComponentConfig::Transform(c) => {
                Built::Transform(c.build(&cx).await.with_context(what)?)
            }
            ComponentConfig::Sink(c) => Built::Sink(c.build(&cx).await.with_context(what)?),
        })
    }

    /// Starts `built` as the instance of `spec`'s component.
    fn spawn(&mut self, spec: &ComponentSpec, setup: Setup, built: Built, output: Option<Output>) {
        self.generation += 1;
        let generation = self.generation;
        let id = spec.id.clone();
        let name = name_of(spec.kind, &id);
        let stop = self.shutdown.child();
        let release = CancellationToken::new();
        let metrics = self.metrics.component(&id);
        let input = || {
            let channel = &self.channels[&id];
            Input::shared(channel.receiver.clone(), release.clone())
        };
        let no_output = || Output::counted(Vec::new(), self.metrics.counter(&id, "events_sent"));
        let task: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>> =
            match built {
                Built::Source(source) => source.run(SourceContext {
                    id: id.clone(),
                    out: output.unwrap_or_else(no_output),
                    shutdown: stop.clone(),
                    metrics,
                }),
                Built::Transform(transform) => transform.run(TransformContext {
                    id: id.clone(),
                    input: input(),
                    out: output.unwrap_or_else(no_output),
                    shutdown: stop.clone(),
                    metrics,
                }),
                Built::Sink(sink) => sink.run(SinkContext {
                    id: id.clone(),
                    input: input(),
                    metrics,
                }),
            };
        let task_id = id.clone();
        self.tasks.spawn(async move {
            // A panic is this component's failure, not the pipeline's.
            let result = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(anyhow::anyhow!("task panicked: {what}"))
                }
            };
            (task_id, generation, result)
        });
        self.health.set(&name, ComponentState::Running);
        self.instances.insert(
            id,
            Instance {
                name,
                generation,
                setup,
                running: true,
                stop,
                release,
            },
        );
    }

    /// Brings the pipeline to `config`: at start every component is new; on a reload only what
    /// changed is replaced. Fails, changing nothing, when a component cannot be built.
    async fn apply(&mut self, config: PipelineConfig) -> anyhow::Result<Changes> {
        let setups = setups(&config);
        let starting = self.instances.is_empty() && self.successors.is_empty();
        let mut changes = Changes::default();
        // The components to start, and whether each replaces a running instance.
        let mut plan: Vec<(ComponentSpec, Setup, bool)> = Vec::new();
        for spec in config.components {
            let setup = setups[&spec.id].clone();
            let current = self.instances.get(&spec.id).map(|i| Current {
                setup: &i.setup,
                running: i.running,
                replacement_pending: self.successors.contains_key(&spec.id),
            });
            match action(current, &setup) {
                Action::Keep => changes.kept += 1,
                Action::Replace => {
                    changes.replaced.push(name_of(spec.kind, &spec.id));
                    plan.push((spec, setup, true));
                }
                Action::Add => {
                    changes.added.push(name_of(spec.kind, &spec.id));
                    plan.push((spec, setup, false));
                }
            }
        }
        let removed = removed(self.instances.keys(), &setups);

        // Build before touching anything; a source replacing a running one is built once its
        // predecessor has stopped (it may want the same port).
        let mut built = Vec::with_capacity(plan.len());
        for (spec, _, replaces) in &plan {
            let now = starting || !(spec.kind == ComponentKind::Source && *replaces);
            built.push(if now {
                Some(self.build(spec).await?)
            } else {
                None
            });
        }

        // Senders to every channel the new config uses, held until each producer has its
        // output, so no channel closes in between.
        let mut consumers: BTreeMap<String, mpsc::Sender<Batch>> = BTreeMap::new();
        for (id, setup) in &setups {
            if setup.kind != ComponentKind::Source {
                let sender = self.sender(id);
                consumers.insert(id.clone(), sender);
            }
        }
        for id in removed {
            // A replacement still waiting for this component is dropped with it.
            self.successors.remove(&id);
            let instance = self.instances.remove(&id).expect("listed above");
            if instance.running {
                // A removed source stops; a removed transform or sink drains what its old
                // producers still send, then ends.
                instance.stop.trigger();
                self.retiring
                    .insert((id.clone(), instance.generation), instance.name.clone());
                changes.removed.push(instance.name);
            } else {
                self.health.remove(&instance.name);
            }
        }
        for ((spec, setup, replaces), built) in plan.into_iter().zip(built) {
            let output = (spec.kind != ComponentKind::Sink)
                .then(|| self.output(&spec.id, &consumers, &setup.consumers));
            if replaces {
                let old = &self.instances[&spec.id];
                old.stop.trigger();
                old.release.cancel();
                self.successors.insert(
                    spec.id.clone(),
                    Successor {
                        spec,
                        setup,
                        built,
                        output,
                    },
                );
            } else {
                let built = built.expect("built above");
                self.spawn(&spec, setup, built, output);
            }
        }
        Ok(changes)
    }

    /// Applies a reloaded config, or says why it cannot.
    async fn reload(&mut self, config: PipelineConfig) {
        let origin = config.origin.clone();
        let interpolated = config.interpolated.clone();
        match self.apply(config).await {
            Ok(changes) if changes.is_empty() => {
                tracing::info!(config = %origin, "reload: nothing changed");
            }
            Ok(changes) => tracing::info!(
                config = %origin,
                replaced = ?changes.replaced,
                added = ?changes.added,
                removed = ?changes.removed,
                unchanged = changes.kept,
                "reload applied"
            ),
            Err(e) => tracing::error!(
                config = %origin,
                "reload rejected, the running pipeline goes on unchanged: {}",
                interpolated.redact(&format!("{e:#}"))
            ),
        }
    }

    /// Closes the channel of a transform or sink that failed, so its producers stop waiting on
    /// it (they skip it from then on and mark what it misses lost), and drops what was queued
    /// for it: not delivered, so no source moves its checkpoint past it.
    async fn close_channel(&mut self, id: &str, name: &str) {
        let Some(channel) = self.channels.remove(id) else {
            return;
        };
        let mut receiver = channel.receiver.lock().await;
        receiver.close();
        let mut events = 0;
        while let Ok(batch) = receiver.try_recv() {
            events += batch.len();
        }
        if events > 0 {
            self.metrics
                .counter_with_reason(id, "events_dropped", Some("component_failed"))
                .add(events as u64);
            tracing::error!(
                component = %name,
                events,
                "events queued for the failed component were dropped (counted in \
                 events_dropped{{reason=component_failed}}); their sources read them again \
                 on the next start"
            );
        }
    }

    /// Bookkeeping when an instance's task ends; returns its name when it failed.
    async fn ended(
        &mut self,
        id: &str,
        generation: u64,
        result: anyhow::Result<()>,
    ) -> Option<String> {
        if let Some(name) = self.retiring.remove(&(id.to_owned(), generation)) {
            if let Err(e) = result {
                tracing::error!(component = %name, "stopped with an error while removed: {e:#}");
            }
            if !self.instances.contains_key(id) {
                self.health.remove(&name);
            }
            return None;
        }
        let instance = self.instances.get_mut(id)?;
        if instance.generation != generation {
            return None;
        }
        instance.running = false;
        let name = instance.name.clone();
        let mut failure = None;
        match result {
            Ok(()) => {
                tracing::debug!(component = %name, "finished");
                self.health.set(&name, ComponentState::Finished);
            }
            Err(e) => {
                tracing::error!(component = %name, "stopped with an error: {e:#}");
                self.health
                    .set(&name, ComponentState::Failed(format!("{e:#}")));
                failure = Some(name.clone());
                if !self.successors.contains_key(id) {
                    self.close_channel(id, &name).await;
                }
            }
        }
        if let Some(successor) = self.successors.remove(id) {
            let built = match successor.built {
                Some(built) => Ok(built),
                None if self.shutdown.is_triggered() => {
                    // Stopping: a source's successor would have nothing to do.
                    return failure;
                }
                None => self.build(&successor.spec).await,
            };
            match built {
                Ok(built) => {
                    self.spawn(&successor.spec, successor.setup, built, successor.output);
                    tracing::info!(component = %name, "restarted with its new settings");
                    return None;
                }
                Err(e) => {
                    tracing::error!(component = %name, "cannot start after the reload: {e:#}");
                    self.health
                        .set(&name, ComponentState::Failed(format!("{e:#}")));
                    return Some(name);
                }
            }
        }
        failure
    }
}

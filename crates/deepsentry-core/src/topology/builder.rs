//! Building components and starting their tasks: the channels they read, the outputs they
//! write to, and each instance's bookkeeping.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::diff::Setup;
use super::{name_of, Built, Channel, Instance, Pipeline};
use crate::batch::Batch;
use crate::component::{BuildContext, SinkContext, SourceContext, TransformContext};
use crate::config::ComponentSpec;
use crate::health::ComponentState;
use crate::input::Input;
use crate::output::Output;
use crate::registry::ComponentConfig;
use crate::CHANNEL_CAPACITY;

impl Pipeline {
    /// A sender to `id`'s channel, creating the channel when it has none or its old one closed.
    pub(super) fn sender(&mut self, id: &str) -> mpsc::Sender<Batch> {
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

    pub(super) fn output(
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

    pub(super) async fn build(&self, spec: &ComponentSpec) -> anyhow::Result<Built> {
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
    pub(super) fn spawn(
        &mut self,
        spec: &ComponentSpec,
        setup: Setup,
        built: Built,
        output: Option<Output>,
    ) {
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
}

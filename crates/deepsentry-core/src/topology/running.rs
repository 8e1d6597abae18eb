//! Changing the running pipeline: applying a config (at start and on reload), stopping what
//! changed, and starting each successor once its predecessor's task has ended.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::diff::{action, removed, setups, Action, Changes, Current, Setup};
use super::{name_of, Pipeline, Successor};
use crate::batch::Batch;
use crate::config::{ComponentSpec, PipelineConfig};
use crate::health::ComponentState;
use crate::registry::ComponentKind;

impl Pipeline {
    /// Brings the pipeline to `config`: at start every component is new; on a reload only what
    /// changed is replaced. Fails, changing nothing, when a component cannot be built.
    pub(super) async fn apply(&mut self, config: PipelineConfig) -> anyhow::Result<Changes> {
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
    pub(super) async fn reload(&mut self, config: PipelineConfig) {
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
    pub(super) async fn close_channel(&mut self, id: &str, name: &str) {
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
    pub(super) async fn ended(
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

//! What a reload changes: each component of the new config against the one running under
//! its id. A component whose type, settings, inputs, consumers and fingerprint are all the
//! same keeps running; any other is replaced (when one runs) or added.

use std::collections::BTreeMap;

use crate::config::PipelineConfig;
use crate::registry::{ComponentConfig, ComponentKind};

/// What decides whether a reload keeps a component running.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Setup {
    pub(super) kind: ComponentKind,
    pub(super) plugin: &'static str,
    pub(super) inputs: Vec<String>,
    pub(super) consumers: Vec<String>,
    pub(super) settings: serde_yaml::Value,
    pub(super) fingerprint: Option<String>,
}

/// Every component's [`Setup`] in `config`.
pub(super) fn setups(config: &PipelineConfig) -> BTreeMap<String, Setup> {
    config
        .components
        .iter()
        .map(|spec| {
            let consumers = config
                .components
                .iter()
                .filter(|c| c.inputs.contains(&spec.id))
                .map(|c| c.id.clone())
                .collect();
            let fingerprint = match &spec.config {
                ComponentConfig::Transform(c) => c.fingerprint(),
                _ => None,
            };
            let setup = Setup {
                kind: spec.kind,
                plugin: spec.plugin,
                inputs: spec.inputs.clone(),
                consumers,
                settings: spec.settings.clone(),
                fingerprint,
            };
            (spec.id.clone(), setup)
        })
        .collect()
}

/// A component of the running pipeline, as a reload sees it.
pub(super) struct Current<'a> {
    pub(super) setup: &'a Setup,
    /// Its task still runs (it did not fail or end).
    pub(super) running: bool,
    /// An earlier reload's replacement is still waiting for it to stop.
    pub(super) replacement_pending: bool,
}

/// What a reload does with one component of the new config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Leave it running, untouched.
    Keep,
    /// Stop the running instance and start a new one on the same channel.
    Replace,
    /// Start it: nothing runs under its id.
    Add,
}

/// What becomes of a component whose new setup is `new`, given what runs under its id.
pub(super) fn action(current: Option<Current<'_>>, new: &Setup) -> Action {
    match current {
        Some(c) if c.setup == new && !c.replacement_pending => Action::Keep,
        Some(c) if c.running => Action::Replace,
        _ => Action::Add,
    }
}

/// The running components the new config no longer has.
pub(super) fn removed<'a>(
    running: impl Iterator<Item = &'a String>,
    new: &BTreeMap<String, Setup>,
) -> Vec<String> {
    running
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect()
}

/// What a reload did.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub(super) kept: usize,
    pub(super) replaced: Vec<String>,
    pub(super) added: Vec<String>,
    pub(super) removed: Vec<String>,
}

impl Changes {
    pub(super) fn is_empty(&self) -> bool {
        self.replaced.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests;

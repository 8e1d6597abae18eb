//! Whether each component of the running pipeline is still doing its work, for the API's
//! `/health`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where a component is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    /// Built and running.
    Running,
    /// Ended without error (a source at end of input, a sink whose inputs ended).
    Finished,
    /// Ended with an error, or panicked; the message says why.
    Failed(String),
}

impl ComponentState {
    /// `running`, `finished` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ComponentState::Running => "running",
            ComponentState::Finished => "finished",
            ComponentState::Failed(_) => "failed",
        }
    }
}

/// The state of every component, by name (`sources.app`, `sinks.out`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, ComponentState>>>);

impl Health {
    /// Records the state of component `name`.
    pub fn set(&self, name: &str, state: ComponentState) {
        self.0
            .lock()
            .expect("health lock poisoned")
            .insert(name.to_owned(), state);
    }

    /// Forgets component `name` (removed by a reload).
    pub fn remove(&self, name: &str) {
        self.0.lock().expect("health lock poisoned").remove(name);
    }

    /// Every component and its state, by name.
    pub fn components(&self) -> BTreeMap<String, ComponentState> {
        self.0.lock().expect("health lock poisoned").clone()
    }

    /// The components that failed, with why; empty while the pipeline is healthy.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.components()
            .into_iter()
            .filter_map(|(name, state)| match state {
                ComponentState::Failed(why) => Some((name, why)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_component_is_reported_with_its_reason() {
        let health = Health::default();
        health.set("sources.in", ComponentState::Running);
        health.set("sinks.out", ComponentState::Running);
        assert!(health.failed().is_empty());
        health.set("sources.in", ComponentState::Finished);
        health.set("sinks.out", ComponentState::Failed("disk full".into()));
        assert_eq!(
            health.failed(),
            vec![("sinks.out".to_owned(), "disk full".to_owned())]
        );
        assert_eq!(health.components()["sources.in"].as_str(), "finished");
    }
}

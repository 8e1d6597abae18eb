//! Counters every component reports: what came in, what went out, what was dropped and why.
//!
//! The registry is deliberately small: named monotonic counters per component, cheap to bump
//! from a hot loop (one relaxed atomic add per batch, not per event).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonic counter; clones share the value.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Identifies a counter: the component, the metric name and an optional `reason` label
/// (`lines_truncated`, `sink_failed`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterKey {
    /// Component id from the config.
    pub component: String,
    /// Metric name, e.g. `events_sent`.
    pub name: &'static str,
    /// Why, for drop and error counters.
    pub reason: Option<&'static str>,
}

/// The process-wide set of counters; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<CounterKey, Counter>>>,
}

impl Metrics {
    /// The counter `name` of `component`, created at zero on first use.
    pub fn counter(&self, component: &str, name: &'static str) -> Counter {
        self.counter_with_reason(component, name, None)
    }

    /// The counter `name{reason}` of `component`, created at zero on first use.
    pub fn counter_with_reason(
        &self,
        component: &str,
        name: &'static str,
        reason: Option<&'static str>,
    ) -> Counter {
        let key = CounterKey {
            component: component.to_owned(),
            name,
            reason,
        };
        self.counters
            .lock()
            .expect("metrics lock poisoned")
            .entry(key)
            .or_default()
            .clone()
    }

    /// Every counter and its value, sorted by component then name.
    pub fn snapshot(&self) -> Vec<(CounterKey, u64)> {
        self.counters
            .lock()
            .expect("metrics lock poisoned")
            .iter()
            .map(|(k, c)| (k.clone(), c.get()))
            .collect()
    }

    /// A view bound to one component.
    pub fn component(&self, component: &str) -> ComponentMetrics {
        ComponentMetrics {
            component: component.to_owned(),
            metrics: self.clone(),
        }
    }
}

/// The counters of one component.
#[derive(Debug, Clone)]
pub struct ComponentMetrics {
    component: String,
    metrics: Metrics,
}

impl ComponentMetrics {
    /// The component's counter `name`.
    pub fn counter(&self, name: &'static str) -> Counter {
        self.metrics.counter(&self.component, name)
    }

    /// The component's counter `name{reason}`.
    pub fn counter_with_reason(&self, name: &'static str, reason: &'static str) -> Counter {
        self.metrics
            .counter_with_reason(&self.component, name, Some(reason))
    }

    /// The component's counter of events dropped for `reason`.
    pub fn dropped(&self, reason: &'static str) -> Counter {
        self.counter_with_reason("events_dropped", reason)
    }

    /// The component id.
    pub fn component(&self) -> &str {
        &self.component
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_by_key() {
        let metrics = Metrics::default();
        metrics.counter("in", "events_sent").add(3);
        metrics.component("in").counter("events_sent").inc();
        metrics.component("in").dropped("oversized").inc();
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[1].1, 4);
        assert_eq!(snapshot[0].0.reason, Some("oversized"));
    }
}

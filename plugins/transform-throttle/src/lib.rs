//! The `throttle` transform: lets at most `threshold` events through per `window_secs`, for
//! each value of `key_field` (one budget for all events without it), and drops the rest. For
//! alert pipelines where grouping is not enough: a flood of distinct alerts still pages at a
//! bounded rate. What it drops is counted (`events_discarded{reason=throttled}`) and said in a
//! log line at most every 10 s per key; like the filter's discards, dropped events count as
//! delivered for acknowledgements, so a source's checkpoint moves past them.
//!
//! ```yaml
//! transforms:
//!   paced:
//!     type: throttle
//!     inputs: [alerts_only]
//!     threshold: 5
//!     window_secs: 60
//!     key_field: template
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deepsentry_core::{BuildContext, Transform, TransformConfig, TransformContext};
use serde::Deserialize;

/// Settings of the `throttle` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleTransformConfig {
    /// Events let through per window and key (at least 1).
    pub threshold: u64,
    /// Length of a window in seconds (default 1). A key's window starts with the first event
    /// it lets through and lasts this long.
    #[serde(default = "default_window_secs")]
    pub window_secs: f64,
    /// The field whose value is the key (`message`, `stream`, `template`, ...); events
    /// without it share one key. Omitted: one budget for every event.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Most keys tracked at once (default 10,000); past it, keys whose window has ended are
    /// forgotten first, then the oldest windows.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_window_secs() -> f64 {
    1.0
}

fn default_max_keys() -> usize {
    10_000
}

deepsentry_core::register_transform!(
    "throttle",
    "Lets at most `threshold` events through per `window_secs` and `key_field`, drops and counts the rest",
    ThrottleTransformConfig
);

/// How long, at least, between two log lines about one key's dropped events.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The budgets of every key: the pure logic of the transform, on a clock given by the caller.
#[derive(Debug)]
pub struct Budgets {
    threshold: u64,
    window: Duration,
    max_keys: usize,
    windows: HashMap<String, Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    passed: u64,
    /// Dropped since the last log line about this key.
    dropped: u64,
    reported: Option<Instant>,
}

/// What [`Budgets::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the event through.
    Pass,
    /// Drop it.
    Drop,
    /// Drop it, and say so: `dropped` events of this key since the last time it was said.
    DropAndReport {
        /// Events of the key dropped since the last report, this one included.
        dropped: u64,
    },
}

impl Budgets {
    /// Budgets of `threshold` events per `window` for up to `max_keys` keys.
    pub fn new(threshold: u64, window: Duration, max_keys: usize) -> Self {
        Self {
            threshold,
            window,
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
        }
    }

    /// Whether an event of `key` arriving at `now` is let through.
    pub fn admit(&mut self, key: &str, now: Instant) -> Verdict {
        // A known key is looked up without allocating; only a new one is copied.
        if !self.windows.contains_key(key) {
            if self.windows.len() >= self.max_keys {
                self.forget_one(now);
            }
            self.windows.insert(
                key.to_owned(),
                Window {
                    started: now,
                    passed: 0,
                    dropped: 0,
                    reported: None,
                },
            );
        }
        let window = self.windows.get_mut(key).expect("inserted above");
        if now.duration_since(window.started) >= self.window {
            window.started = now;
            window.passed = 0;
        }
        if window.passed < self.threshold {
            window.passed += 1;
            return Verdict::Pass;
        }
        window.dropped += 1;
        if window
            .reported
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            window.reported = Some(now);
            Verdict::DropAndReport {
                dropped: std::mem::take(&mut window.dropped),
            }
        } else {
            Verdict::Drop
        }
    }

    /// Makes room for one key: one whose window has ended, else the one whose window began
    /// first (its budget starts afresh if it comes back).
    fn forget_one(&mut self, now: Instant) {
        let ended = self
            .windows
            .iter()
            .find(|(_, w)| now.duration_since(w.started) >= self.window)
            .map(|(k, _)| k.clone());
        let victim = ended.or_else(|| {
            self.windows
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(k, _)| k.clone())
        });
        if let Some(key) = victim {
            self.windows.remove(&key);
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.windows.len()
    }
}

/// A built `throttle` transform.
#[derive(Debug)]
pub struct ThrottleTransform {
    budgets: Budgets,
    key_field: Option<String>,
    window_secs: f64,
}

impl ThrottleTransformConfig {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.threshold >= 1,
            "`threshold` must be at least 1 (events let through per window)"
        );
        anyhow::ensure!(
            self.window_secs.is_finite() && self.window_secs > 0.0,
            "`window_secs` must be a positive number of seconds"
        );
        anyhow::ensure!(self.max_keys >= 1, "`max_keys` must be at least 1");
        Ok(())
    }
}

#[async_trait]
impl TransformConfig for ThrottleTransformConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Transform>> {
        self.validate()?;
        Ok(Box::new(ThrottleTransform {
            budgets: Budgets::new(
                self.threshold,
                Duration::from_secs_f64(self.window_secs),
                self.max_keys,
            ),
            key_field: self.key_field.clone(),
            window_secs: self.window_secs,
        }))
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        self.validate()
    }
}

#[async_trait]
impl Transform for ThrottleTransform {
    async fn run(mut self: Box<Self>, mut cx: TransformContext) -> anyhow::Result<()> {
        let discarded = cx
            .metrics
            .counter_with_reason("events_discarded", "throttled");
        let keys = cx.metrics.gauge("throttle_keys");
        while let Some(mut batch) = cx.input.recv().await {
            let before = batch.len();
            let now = Instant::now();
            let (budgets, key_field) = (&mut self.budgets, &self.key_field);
            batch.events.retain(|event| {
                // The key is read in place: no copy per event.
                let mut judge = |key: &str| match budgets.admit(key, now) {
                    Verdict::Pass => true,
                    Verdict::Drop => false,
                    Verdict::DropAndReport { dropped } => {
                        tracing::warn!(
                            transform = %cx.id,
                            key,
                            dropped,
                            threshold = budgets.threshold,
                            window_secs = self.window_secs,
                            "throttled: events over the threshold were dropped"
                        );
                        false
                    }
                };
                match key_field {
                    Some(field) => event
                        .with_field_text(field, &mut judge)
                        .unwrap_or_else(|| judge("")),
                    None => judge(""),
                }
            });
            discarded.add((before - batch.len()) as u64);
            keys.set(self.budgets.keys() as f64);
            // An emptied batch is still sent: it carries the acknowledgements.
            if cx.out.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_threshold_per_window() {
        let start = Instant::now();
        let mut budgets = Budgets::new(2, Duration::from_secs(10), 100);
        let verdicts: Vec<Verdict> = ["a", "a", "b", "a", "a", "b", "b"]
            .iter()
            .map(|key| budgets.admit(key, start))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Pass,
                Verdict::Pass,
                Verdict::Pass,
                Verdict::DropAndReport { dropped: 1 },
                Verdict::Drop,
                Verdict::Pass,
                Verdict::DropAndReport { dropped: 1 },
            ]
        );
        // The next window lets the key through again; the report says what it dropped since.
        let later = start + Duration::from_secs(10);
        assert_eq!(budgets.admit("a", later), Verdict::Pass);
        assert_eq!(budgets.admit("a", later), Verdict::Pass);
        assert_eq!(
            budgets.admit("a", later),
            Verdict::DropAndReport { dropped: 2 }
        );
    }

    #[test]
    fn reports_are_rate_limited_per_key() {
        let start = Instant::now();
        let mut budgets = Budgets::new(1, Duration::from_secs(3600), 100);
        assert_eq!(budgets.admit("k", start), Verdict::Pass);
        assert_eq!(
            budgets.admit("k", start),
            Verdict::DropAndReport { dropped: 1 }
        );
        for _ in 0..5 {
            assert_eq!(
                budgets.admit("k", start + Duration::from_secs(1)),
                Verdict::Drop
            );
        }
        assert_eq!(
            budgets.admit("k", start + REPORT_EVERY),
            Verdict::DropAndReport { dropped: 6 }
        );
    }

    #[test]
    fn the_key_count_is_bounded() {
        let start = Instant::now();
        let mut budgets = Budgets::new(1, Duration::from_secs(60), 3);
        for (i, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            assert_eq!(budgets.admit(key, at), Verdict::Pass, "{key}");
            assert!(budgets.keys() <= 3);
        }
        // `a` began first and was forgotten: it starts afresh.
        assert_eq!(
            budgets.admit("a", start + Duration::from_secs(5)),
            Verdict::Pass
        );
    }

    #[test]
    fn mistakes_are_refused() {
        let config = |yaml: &str| serde_yaml::from_str::<ThrottleTransformConfig>(yaml).unwrap();
        assert!(config("threshold: 0").validate().is_err());
        assert!(config("threshold: 3\nwindow_secs: 0").validate().is_err());
        assert!(
            config("threshold: 3\nwindow_secs: 2.5\nkey_field: template")
                .validate()
                .is_ok()
        );
        assert!(
            serde_yaml::from_str::<ThrottleTransformConfig>("threshold: 3\nwindow: 5").is_err()
        );
    }
}

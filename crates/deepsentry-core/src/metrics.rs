//! What every component reports: counters of what came in, what went out, what was dropped
//! and why; gauges of current values (a threshold, sessions held, a channel's fill);
//! histograms of scores and latencies; and info labels (which model is loaded).
//!
//! The registry is deliberately small and cheap to update from a hot loop: one relaxed atomic
//! operation per batch for a counter or gauge. [`Metrics::render_prometheus`] writes it all in
//! Prometheus' text format for the API's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
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

/// A value that goes up and down; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The current value (0 until set).
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Observations counted in fixed buckets, with their sum; clones share them.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds of the buckets, ascending; a last bucket `+Inf` is implied.
    bounds: &'static [f64],
    /// One count per bucket (not cumulative), `+Inf` last.
    counts: Vec<AtomicU64>,
    /// Sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations <= bound)`, cumulative, ending with `+Inf` (all of them).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        Self(Arc::new(HistogramInner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let bucket = self.0.bounds.partition_point(|&bound| bound < value);
        self.0.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let mut current = self.0.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.0.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
    }

    /// The cumulative buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let bounds = self.0.bounds.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds
            .zip(&self.0.counts)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: f64::from_bits(self.0.sum.load(Ordering::Relaxed)),
            count: total,
        }
    }
}

/// Label names and values of an info metric.
pub type Labels = Vec<(String, String)>;

/// A value computed when the metrics are read (a channel's fill); `None` when it no longer
/// exists.
pub type Probe = Box<dyn Fn() -> Option<f64> + Send + Sync>;

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

/// The process-wide set of metrics; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<BTreeMap<CounterKey, Counter>>>,
    gauges: Arc<Mutex<BTreeMap<CounterKey, Gauge>>>,
    histograms: Arc<Mutex<BTreeMap<CounterKey, Histogram>>>,
    probes: Arc<Mutex<BTreeMap<CounterKey, Probe>>>,
    infos: Arc<Mutex<BTreeMap<CounterKey, Labels>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("counters", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

fn key(component: &str, name: &'static str) -> CounterKey {
    CounterKey {
        component: component.to_owned(),
        name,
        reason: None,
    }
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

    /// The gauge `name` of `component`, created at zero on first use.
    pub fn gauge(&self, component: &str, name: &'static str) -> Gauge {
        self.gauges
            .lock()
            .expect("metrics lock poisoned")
            .entry(key(component, name))
            .or_default()
            .clone()
    }

    /// The histogram `name` of `component` with buckets up to `bounds` (ascending), created
    /// empty on first use; later calls get the same histogram whatever bounds they pass.
    pub fn histogram(
        &self,
        component: &str,
        name: &'static str,
        bounds: &'static [f64],
    ) -> Histogram {
        self.histograms
            .lock()
            .expect("metrics lock poisoned")
            .entry(key(component, name))
            .or_insert_with(|| Histogram::new(bounds))
            .clone()
    }

    /// A gauge `name` of `component` whose value `probe` computes each time the metrics are
    /// read; it disappears once `probe` returns `None`. Replaces an earlier probe of that name.
    pub fn probe(&self, component: &str, name: &'static str, probe: Probe) {
        self.probes
            .lock()
            .expect("metrics lock poisoned")
            .insert(key(component, name), probe);
    }

    /// Publishes `name` of `component` as an info metric: a constant 1 carrying `labels`
    /// (a model's path and settings). Replaces earlier labels of that name.
    pub fn info(&self, component: &str, name: &'static str, labels: Labels) {
        self.infos
            .lock()
            .expect("metrics lock poisoned")
            .insert(key(component, name), labels);
    }

    /// Every metric in Prometheus' text exposition format (version 0.0.4). Names get the
    /// prefix `deepsentry_` and counters the suffix `_total`; every sample carries its
    /// `component` label and, for counters with a reason, a `reason` label.
    pub fn render_prometheus(&self) -> String {
        let mut out = Renderer::default();
        for (key, value) in self.snapshot() {
            out.sample(&key, "counter", "_total", &[], value as f64);
        }
        for (key, gauge) in self.gauges.lock().expect("metrics lock poisoned").iter() {
            out.sample(key, "gauge", "", &[], gauge.get());
        }
        {
            let mut probes = self.probes.lock().expect("metrics lock poisoned");
            probes.retain(|key, probe| match probe() {
                Some(value) => {
                    out.sample(key, "gauge", "", &[], value);
                    true
                }
                None => false,
            });
        }
        for (key, labels) in self.infos.lock().expect("metrics lock poisoned").iter() {
            out.sample(key, "gauge", "_info", labels, 1.0);
        }
        for (key, histogram) in self
            .histograms
            .lock()
            .expect("metrics lock poisoned")
            .iter()
        {
            let snapshot = histogram.snapshot();
            for (bound, count) in &snapshot.buckets {
                let le = if bound.is_infinite() {
                    "+Inf".to_owned()
                } else {
                    bound.to_string()
                };
                out.histogram_sample(key, "_bucket", Some(&le), *count as f64);
            }
            out.histogram_sample(key, "_sum", None, snapshot.sum);
            out.histogram_sample(key, "_count", None, snapshot.count as f64);
        }
        out.finish()
    }

    /// A view bound to one component.
    pub fn component(&self, component: &str) -> ComponentMetrics {
        ComponentMetrics {
            component: component.to_owned(),
            metrics: self.clone(),
        }
    }
}

/// Samples grouped by metric family; each family is written after its `# HELP` and `# TYPE`.
#[derive(Default)]
struct Renderer {
    /// Family name -> (type, sample lines).
    families: BTreeMap<String, (&'static str, String)>,
}

impl Renderer {
    fn family(&mut self, name: &str, kind: &'static str) -> &mut String {
        &mut self
            .families
            .entry(name.to_owned())
            .or_insert_with(|| (kind, String::new()))
            .1
    }

    fn sample(
        &mut self,
        key: &CounterKey,
        kind: &'static str,
        suffix: &str,
        labels: &[(String, String)],
        value: f64,
    ) {
        let name = format!("deepsentry_{}{suffix}", key.name);
        let samples = self.family(&name, kind);
        write_labels(
            samples,
            &name,
            key,
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let _ = writeln!(samples, " {}", number(value));
    }

    fn histogram_sample(&mut self, key: &CounterKey, suffix: &str, le: Option<&str>, value: f64) {
        let family = format!("deepsentry_{}", key.name);
        let samples = self.family(&family, "histogram");
        write_labels(
            samples,
            &format!("{family}{suffix}"),
            key,
            le.map(|le| ("le", le)),
        );
        let _ = writeln!(samples, " {}", number(value));
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for (name, (kind, samples)) in self.families {
            let _ = writeln!(out, "# HELP {name} {}", help(&name));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&samples);
        }
        out
    }
}

/// `name{component="...",reason="...",extra="..."}`.
fn write_labels<'a>(
    out: &mut String,
    name: &str,
    key: &CounterKey,
    extra: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let _ = write!(
        out,
        "{name}{{component=\"{}\"",
        escape_label(&key.component)
    );
    if let Some(reason) = key.reason {
        let _ = write!(out, ",reason=\"{}\"", escape_label(reason));
    }
    for (label, value) in extra {
        let _ = write!(out, ",{label}=\"{}\"", escape_label(value));
    }
    out.push('}');
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// A metric's `# HELP` text, registered by the plugin that publishes the metric (see
/// [`describe_metric!`](crate::describe_metric)), so the core describes only its own.
#[derive(Debug)]
pub struct MetricHelp {
    /// The metric's name as the component publishes it (`events_scored_total` for a counter
    /// `events_scored`).
    pub name: &'static str,
    /// One sentence on what it counts.
    pub text: &'static str,
}

inventory::collect!(MetricHelp);

/// Describes a metric a plugin publishes: `describe_metric!("anomalies_total", "Events ...");`
/// (counters with their `_total` suffix).
#[macro_export]
macro_rules! describe_metric {
    ($name:literal, $text:literal) => {
        $crate::inventory::submit! {
            $crate::metrics::MetricHelp { name: $name, text: $text }
        }
    };
}

/// The `# HELP` text of a family: a plugin's description of its own metric, or the core's of
/// the metrics every component has.
fn help(family: &str) -> &'static str {
    let name = family.strip_prefix("deepsentry_").unwrap_or(family);
    if let Some(described) = inventory::iter::<MetricHelp>().find(|h| h.name == name) {
        return described.text;
    }
    match name {
        "events_received_total" => "Events a component received (read by a source, or from its inputs).",
        "events_sent_total" => "Events a component sent on to the components that read it.",
        "events_delivered_total" => "Events a sink delivered (written, acknowledged by the peer).",
        "events_dropped_total" => "Events a component dropped, by reason.",
        "events_not_delivered_total" => "Events a source was told some sink gave up on.",
        "events_lost_in_pipeline_total" => "Events a source was told a failed component dropped; its checkpoint stays behind them.",
        "connections_closed_total" => "Connections a source closed, by reason.",
        "events_discarded_total" => "Events a transform let through no further (a filter), by reason.",
        "bytes_received_total" => "Bytes a source read.",
        "lines_modified_total" => "Lines changed on the way in (truncated, invalid UTF-8 replaced, not decoded, multiline split), by reason.",
        "send_errors_total" => "Failed attempts of a sink to send (each retried or counted as dropped), by reason.",
        "input_channel_batches" => "Batches waiting in a component's input channel (its capacity is 16): a full channel means the component is the bottleneck.",
        _ => "See docs/configuration.md, Metrics.",
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

    /// The component's gauge `name`.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.metrics.gauge(&self.component, name)
    }

    /// The component's histogram `name` (see [`Metrics::histogram`]).
    pub fn histogram(&self, name: &'static str, bounds: &'static [f64]) -> Histogram {
        self.metrics.histogram(&self.component, name, bounds)
    }

    /// Publishes the component's info metric `name` (see [`Metrics::info`]).
    pub fn info(&self, name: &'static str, labels: Labels) {
        self.metrics.info(&self.component, name, labels);
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

    crate::describe_metric!("widgets_total", "Widgets a test counted.");

    #[test]
    fn a_plugin_describes_its_own_metrics() {
        let metrics = Metrics::default();
        metrics.counter("w", "widgets").add(2);
        metrics.counter("w", "events_sent").add(1);
        let text = metrics.render_prometheus();
        assert!(text.contains("# HELP deepsentry_widgets_total Widgets a test counted.\n"));
        assert!(text.contains("# HELP deepsentry_events_sent_total Events a component sent"));
    }

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

    #[test]
    fn histograms_count_cumulatively() {
        let metrics = Metrics::default();
        let histogram = metrics.histogram("detect", "anomaly_score", &[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 7.0] {
            histogram.observe(value);
        }
        let snapshot = metrics.histogram("detect", "anomaly_score", &[]).snapshot();
        assert_eq!(
            snapshot.buckets,
            vec![(1.0, 2), (2.0, 3), (f64::INFINITY, 4)]
        );
        assert_eq!(snapshot.sum, 10.0);
        assert_eq!(snapshot.count, 4);
    }

    #[test]
    fn prometheus_text_has_every_kind_of_metric() {
        let metrics = Metrics::default();
        metrics.counter("in", "events_sent").add(3);
        metrics.component("out").dropped("rejected").add(2);
        metrics.gauge("detect", "anomaly_threshold").set(2.5);
        metrics
            .histogram("detect", "scoring_seconds", &[0.01, 0.1])
            .observe(0.05);
        metrics.info(
            "detect",
            "model",
            vec![("path".into(), "models/\"x\"".into())],
        );
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        metrics.probe(
            "out",
            "input_channel_batches",
            Box::new(move || flag.load(Ordering::Relaxed).then_some(4.0)),
        );
        let text = metrics.render_prometheus();
        for expected in [
            "# TYPE deepsentry_events_sent_total counter\n\
             deepsentry_events_sent_total{component=\"in\"} 3\n",
            "deepsentry_events_dropped_total{component=\"out\",reason=\"rejected\"} 2\n",
            "# TYPE deepsentry_anomaly_threshold gauge\n\
             deepsentry_anomaly_threshold{component=\"detect\"} 2.5\n",
            "# TYPE deepsentry_scoring_seconds histogram\n",
            "deepsentry_scoring_seconds_bucket{component=\"detect\",le=\"0.01\"} 0\n",
            "deepsentry_scoring_seconds_bucket{component=\"detect\",le=\"0.1\"} 1\n",
            "deepsentry_scoring_seconds_bucket{component=\"detect\",le=\"+Inf\"} 1\n",
            "deepsentry_scoring_seconds_count{component=\"detect\"} 1\n",
            "deepsentry_model_info{component=\"detect\",path=\"models/\\\"x\\\"\"} 1\n",
            "deepsentry_input_channel_batches{component=\"out\"} 4\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        alive.store(false, Ordering::Relaxed);
        assert!(!metrics.render_prometheus().contains("input_channel"));
    }
}

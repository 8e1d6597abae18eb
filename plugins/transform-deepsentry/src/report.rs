//! The transform's metrics: the scorer's counters, scores, threshold and latency.

use std::time::Duration;

use deepsentry_core::anomaly;
use deepsentry_core::metrics::{ComponentMetrics, Counter, Gauge, Histogram};
use deepsentry_core::Event;
use deepsentry_model::scorer::ScorerStats;

deepsentry_core::describe_metric!("events_scored_total", "Events the anomaly detector scored.");
deepsentry_core::describe_metric!(
    "anomalies_total",
    "Events the anomaly detector flagged as anomalies."
);
deepsentry_core::describe_metric!("anomaly_score", "Anomaly scores of the scored events.");
deepsentry_core::describe_metric!(
    "anomaly_threshold",
    "The adaptive threshold of the last scored event."
);
deepsentry_core::describe_metric!("scoring_seconds", "Time to score one batch of events.");
deepsentry_core::describe_metric!("sessions_held", "Sessions the anomaly detector holds open.");
deepsentry_core::describe_metric!(
    "detector_cache_hit_ratio",
    "Share of windows whose detector output came from the cache."
);
deepsentry_core::describe_metric!(
    "model_fits",
    "1 while the model fits the log, 0 once most lines are of templates it never saw."
);
deepsentry_core::describe_metric!(
    "model_info",
    "The loaded anomaly model: path, backend and sequence_length."
);

deepsentry_core::describe_metric!(
    "unknown_template_lines_total",
    "Lines whose template the model was not trained on (learned online)."
);
deepsentry_core::describe_metric!(
    "lone_trace_lines_total",
    "Events that are one line of a stack trace on their own (the source did not join them)."
);

/// Lone trace lines after which a model trained on joined traces says that the source does not
/// join them (one may be a message that looks like a frame).
const LONE_TRACE_LINES_TO_REPORT: u64 = 3;

/// Buckets of the `anomaly_score` histogram (scores are surprises in nats, plus reconstruction
/// error; the shipped model's threshold sits around 10).
const SCORE_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0];

/// Buckets of the `scoring_seconds` histogram (one batch of up to `batch_size` events).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Reports the scorer's counters, scores, threshold and latency as metrics.
pub(crate) struct Reporter {
    scores: Histogram,
    threshold: Gauge,
    latency: Histogram,
    sessions_held: Gauge,
    cache_hit_ratio: Gauge,
    scored: Counter,
    anomalies: Counter,
    sessions_ended: Counter,
    sessions_evicted: Counter,
    broken_invariants: Counter,
    detector_windows: Counter,
    alerts: Counter,
    templates_learned: Counter,
    templates_evicted: Counter,
    vocabulary_bytes: Gauge,
    unknown_lines: Counter,
    model_fits: Gauge,
    lone_trace_lines: Counter,
    /// Whether the transform said that its model does not fit the log (it says so once).
    unfit_reported: bool,
    /// Whether it said that the source does not join the traces its model knows joined.
    split_traces_reported: bool,
    last: ScorerStats,
}

impl Reporter {
    pub(crate) fn new(metrics: &ComponentMetrics) -> Self {
        Self {
            scores: metrics.histogram("anomaly_score", SCORE_BUCKETS),
            threshold: metrics.gauge("anomaly_threshold"),
            latency: metrics.histogram("scoring_seconds", LATENCY_BUCKETS),
            sessions_held: metrics.gauge("sessions_held"),
            cache_hit_ratio: metrics.gauge("detector_cache_hit_ratio"),
            scored: metrics.counter("events_scored"),
            anomalies: metrics.counter("anomalies"),
            sessions_ended: metrics.counter("sessions_ended"),
            sessions_evicted: metrics.counter_with_reason("sessions_ended", "max_sessions"),
            broken_invariants: metrics.counter("sessions_with_broken_invariant"),
            detector_windows: metrics.counter("detector_windows_computed"),
            alerts: metrics.counter("alerts"),
            templates_learned: metrics.counter("templates_learned"),
            templates_evicted: metrics.counter("templates_evicted"),
            vocabulary_bytes: metrics.gauge("vocabulary_bytes"),
            unknown_lines: metrics.counter("unknown_template_lines"),
            model_fits: metrics.gauge("model_fits"),
            lone_trace_lines: metrics.counter("lone_trace_lines"),
            unfit_reported: false,
            split_traces_reported: false,
            last: ScorerStats::default(),
        }
    }

    /// Records the scores and threshold of `events` just scored, and how long it took.
    pub(crate) fn scored(&self, events: &[Event], took: Duration) {
        self.latency.observe(took.as_secs_f64());
        for event in events {
            if let Some(score) = event.fields.number(anomaly::ANOMALY_SCORE) {
                self.scores.observe(score);
            }
        }
        if let Some(threshold) = events
            .iter()
            .rev()
            .find_map(|e| e.fields.number(anomaly::ANOMALY_THRESHOLD))
        {
            self.threshold.set(threshold);
        }
    }

    pub(crate) fn report(&mut self, now: ScorerStats, sessions_held: usize) {
        self.sessions_held.set(sessions_held as f64);
        if now.scored > 0 {
            let misses = now.detector_windows.min(now.scored) as f64;
            self.cache_hit_ratio.set(1.0 - misses / now.scored as f64);
        }
        self.scored.add(now.scored - self.last.scored);
        self.anomalies.add(now.anomalies - self.last.anomalies);
        self.sessions_ended
            .add(now.sessions_ended - self.last.sessions_ended);
        self.sessions_evicted
            .add(now.sessions_evicted - self.last.sessions_evicted);
        self.broken_invariants
            .add(now.broken_invariants - self.last.broken_invariants);
        self.detector_windows
            .add(now.detector_windows - self.last.detector_windows);
        self.alerts.add(now.alerts - self.last.alerts);
        self.templates_learned
            .add(now.templates_learned - self.last.templates_learned);
        self.templates_evicted
            .add(now.templates_evicted - self.last.templates_evicted);
        self.vocabulary_bytes.set(now.vocabulary_bytes as f64);
        self.unknown_lines
            .add(now.unknown_lines - self.last.unknown_lines);
        self.lone_trace_lines
            .add(now.lone_trace_lines - self.last.lone_trace_lines);
        self.last = now;
        if !self.split_traces_reported
            && now.model_joined_lines
            && now.lone_trace_lines >= LONE_TRACE_LINES_TO_REPORT
        {
            self.split_traces_reported = true;
            tracing::warn!(
                lone_trace_lines = now.lone_trace_lines,
                "the model was trained on stack traces joined into one event each, but this \
                 input's trace lines arrive one by one, as events the model never saw: set \
                 `multiline: any` on the source, as training joined them"
            );
        }
        self.model_fits.set(if now.model_fits { 1.0 } else { 0.0 });
        if !self.unfit_reported && !now.model_fits {
            self.unfit_reported = true;
            tracing::warn!(
                lines = now.scored,
                unknown_template_lines = now.unknown_lines,
                "most lines are of templates the model never saw in training: the model \
                 does not fit this log; new templates are judged by how often this stream \
                 brings them, and the sequence part knows none of them; train a model on \
                 this system's normal logs (`deepsentry train --input ...`) and set `model`"
            );
        }
    }
}

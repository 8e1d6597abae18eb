//! The `deepsentry` transform: scores every event with the learned anomaly detector and
//! enriches it with `anomaly_score`, `anomaly_threshold`, `is_anomaly`, `context_window` and
//! `session`. Events are scored in batches (`batch_size` events or `batch_interval` seconds,
//! whichever comes first); session ends are emitted as events of their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::event::keys;
use deepsentry_core::metrics::{ComponentMetrics, Counter, Gauge, Histogram};
use deepsentry_core::{Batch, BuildContext, Event, Transform, TransformConfig, TransformContext};
use deepsentry_model::novelty::{OnlineState, VocabularyLimits};
use deepsentry_model::scorer::ScorerStats;
use deepsentry_model::session_key::SessionKeySpec;
use deepsentry_model::{
    BackendKind, LoadedModel, Scorer, ScorerSettings, SequenceModel, SessionKey,
};
use regex::Regex;
use serde::Deserialize;

pub mod retrain;
use retrain::{Outcome, Period, RecentLines, RetrainJob};

/// Settings of the `deepsentry` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepsentryTransformConfig {
    /// Directory of a model bundle made by `deepsentry train`, or `builtin` (the default): the
    /// shipped model, built into the binary.
    #[serde(default = "builtin_model")]
    pub model: PathBuf,
    /// `flex` (default), `ndarray`, `wgpu` (GPU builds) or `auto`.
    #[serde(default)]
    pub backend: BackendKind,
    /// Events per scored window; must equal the model's (checked at start). Default: the
    /// model's.
    #[serde(default)]
    pub sequence_length: Option<usize>,
    /// Recent scores the adaptive threshold is computed over. Default 100.
    #[serde(default = "default_window_size")]
    pub window_size: usize,
    /// Standard deviations above the mean that make an anomaly. Default 2.5.
    #[serde(default = "default_threshold_multiplier")]
    pub threshold_multiplier: f64,
    /// Scores seen before the first alert (warm-up). Default 20.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// The threshold never goes below this. Default: the floor learned in training.
    #[serde(default)]
    pub threshold_floor: Option<f64>,
    /// Keep anomalous scores out of the rolling window (an incident does not raise its own
    /// bar). Default `true`.
    #[serde(default = "default_true")]
    pub exclude_anomalies: bool,
    /// Score at least this often, in seconds, when fewer than `batch_size` events wait.
    /// Default 1.0.
    #[serde(default = "default_batch_interval")]
    pub batch_interval: f64,
    /// Score as soon as this many events wait. Default 1024.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Regex whose first capture group (or whole match) names an event's session, e.g.
    /// `'(blk_-?\d+)'`; `none`: one session per source stream (file, peer, stdin); `auto`
    /// (the default): the key the model was trained with (given, or found by training's
    /// `auto`), else one session per stream.
    #[serde(default)]
    pub session_key: Option<String>,
    /// Name of a field holding the session instead (decoded by a source, e.g. a syslog
    /// message's `appname`, or set by an earlier transform).
    #[serde(default)]
    pub session_field: Option<String>,
    /// Seconds (in the events' own clock when lines carry a timestamp) after which an idle
    /// session ends and its end is scored. Default: twice the longest pause inside a training
    /// session, at least 60.
    #[serde(default)]
    pub session_ttl: Option<f64>,
    /// Most sessions tracked at once; past it the least recently active one ends. Default
    /// 100000.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Anomalies of the same template and reason within this many seconds (events' own clock)
    /// of the group's first are one alert: later ones carry `alert: false`, `alert_group` and
    /// `alert_count`. 0 makes every anomaly an alert. Default 60.
    #[serde(default = "default_alert_group_secs")]
    pub alert_group_secs: u64,
    /// Most templates learned online (never seen in training); past it the least recently
    /// seen are forgotten. Default 20000.
    #[serde(default = "default_max_templates")]
    pub max_templates: usize,
    /// Most bytes the templates learned online may take. Default 32 MiB.
    #[serde(default = "default_max_template_bytes")]
    pub max_template_bytes: usize,
    /// A field holding the event's level, decoded by a source; the line's own words are read
    /// when it is missing. Default: the first of `level`, `severity`, `lvl` the event has.
    #[serde(default)]
    pub level_field: Option<String>,
    /// The floor for templates never seen in training (nats of surprise): one is flagged when
    /// the system's normal logs bring a new template of its severity more rarely than
    /// `e^-novelty_floor` per line. Default 5.3 (one line in 200).
    #[serde(default = "default_novelty_floor")]
    pub novelty_floor: f64,
    /// A line dated more than this many seconds after it is scored does not move the session
    /// clock, so one line with a wrong date cannot end every open session. Default 300.
    #[serde(default = "default_max_clock_skew_secs")]
    pub max_clock_skew_secs: u64,
    /// Retrain the model by itself once per period (`24h`, `30m`, ...) on the recent lines it
    /// did not flag, in the background, and swap the result in when it flags no more of the
    /// latest lines than the running model. Default: never.
    #[serde(default)]
    pub retrain_every: Option<Period>,
    /// Most bytes of recent lines kept for retraining (the oldest go first). Default 64 MiB.
    #[serde(default = "default_retrain_max_bytes")]
    pub retrain_max_bytes: u64,
}

fn default_retrain_max_bytes() -> u64 {
    64 << 20
}

fn default_max_clock_skew_secs() -> u64 {
    300
}

fn default_novelty_floor() -> f64 {
    deepsentry_model::scorer::NOVELTY_FLOOR
}

fn default_alert_group_secs() -> u64 {
    60
}
fn default_max_templates() -> usize {
    VocabularyLimits::default().max_templates
}
fn default_max_template_bytes() -> usize {
    VocabularyLimits::default().max_bytes
}

fn default_window_size() -> usize {
    100
}
fn default_threshold_multiplier() -> f64 {
    2.5
}
fn default_min_samples() -> usize {
    20
}
fn default_true() -> bool {
    true
}
fn default_batch_interval() -> f64 {
    1.0
}
fn builtin_model() -> PathBuf {
    PathBuf::from(deepsentry_model::bundle::BUILTIN)
}
fn default_batch_size() -> usize {
    1024
}
fn default_max_sessions() -> usize {
    100_000
}

deepsentry_core::register_transform!(
    "deepsentry",
    "Scores events with the learned anomaly detector (autoencoder + sequence model)",
    DeepsentryTransformConfig
);

impl DeepsentryTransformConfig {
    /// Default settings for `model`.
    pub fn for_model(model: PathBuf) -> Self {
        Self {
            model,
            backend: BackendKind::default(),
            sequence_length: None,
            window_size: default_window_size(),
            threshold_multiplier: default_threshold_multiplier(),
            min_samples: default_min_samples(),
            threshold_floor: None,
            exclude_anomalies: true,
            batch_interval: default_batch_interval(),
            batch_size: default_batch_size(),
            session_key: None,
            session_field: None,
            session_ttl: None,
            max_sessions: default_max_sessions(),
            alert_group_secs: default_alert_group_secs(),
            max_templates: default_max_templates(),
            max_template_bytes: default_max_template_bytes(),
            level_field: None,
            novelty_floor: default_novelty_floor(),
            max_clock_skew_secs: default_max_clock_skew_secs(),
            retrain_every: None,
            retrain_max_bytes: default_retrain_max_bytes(),
        }
    }

    /// Loads the model and checks these settings against it.
    pub fn load_model(&self) -> anyhow::Result<Arc<LoadedModel>> {
        let model = LoadedModel::load(&self.model, self.backend)
            .with_context(|| format!("cannot load the model in {}", self.model.display()))?;
        if let Some(wanted) = self.sequence_length {
            let trained = model.sequence_length();
            anyhow::ensure!(
                wanted == trained,
                "`sequence_length` is {wanted} but the model in {} was trained with \
                 sequence_length {trained}; they must match (remove the key to use the model's, \
                 or retrain with --sequence-length {wanted})",
                self.model.display()
            );
        }
        Ok(Arc::new(model))
    }

    /// The scorer settings these keys describe, for `model`.
    pub fn scorer_settings(&self, model: &LoadedModel) -> anyhow::Result<ScorerSettings> {
        anyhow::ensure!(self.window_size >= 2, "`window_size` must be at least 2");
        anyhow::ensure!(
            self.threshold_multiplier.is_finite() && self.threshold_multiplier >= 0.0,
            "`threshold_multiplier` must be a non-negative number"
        );
        anyhow::ensure!(self.batch_size >= 1, "`batch_size` must be at least 1");
        anyhow::ensure!(
            self.max_templates >= 1,
            "`max_templates` must be at least 1"
        );
        anyhow::ensure!(
            self.novelty_floor.is_finite() && self.novelty_floor >= 0.0,
            "`novelty_floor` must be a non-negative number"
        );
        anyhow::ensure!(
            self.retrain_max_bytes >= 65_536,
            "`retrain_max_bytes` must be at least 65536"
        );
        anyhow::ensure!(
            self.max_template_bytes >= 4096,
            "`max_template_bytes` must be at least 4096"
        );
        let spec = SessionKeySpec::parse(self.session_key.as_deref());
        let regex = |pattern: &str| {
            Regex::new(pattern)
                .map(SessionKey::Regex)
                .with_context(|| format!("`session_key` is not a valid regex: {pattern}"))
        };
        let session_key = match (spec, &self.session_field) {
            (SessionKeySpec::Auto, Some(field)) => SessionKey::Field(field.clone()),
            (_, Some(_)) => {
                anyhow::bail!("set either `session_key` or `session_field`, not both")
            }
            (SessionKeySpec::Regex(pattern), None) => regex(&pattern)?,
            (SessionKeySpec::Stream, None) => SessionKey::Stream,
            (SessionKeySpec::Auto, None) => match &model.metadata.training.session_key {
                Some(pattern) => regex(pattern)
                    .with_context(|| format!("in the model in {}", self.model.display()))?,
                None => SessionKey::Stream,
            },
        };
        let trained_gap = model.metadata.training.max_session_gap_secs as f64;
        let ttl = self.session_ttl.unwrap_or((2.0 * trained_gap).max(60.0));
        if ttl < trained_gap {
            tracing::warn!(
                session_ttl = ttl,
                training_max_gap = trained_gap,
                "session_ttl is shorter than pauses seen inside normal training sessions; \
                 healthy sessions will be ended early and may be flagged"
            );
        }
        Ok(ScorerSettings {
            window_size: self.window_size,
            threshold_multiplier: self.threshold_multiplier,
            min_samples: self.min_samples,
            exclude_anomalies: self.exclude_anomalies,
            threshold_floor: self.threshold_floor,
            session_key,
            session_ttl_secs: ttl.round() as i64,
            max_sessions: self.max_sessions,
            alert_group_secs: i64::try_from(self.alert_group_secs).unwrap_or(i64::MAX),
            vocabulary: VocabularyLimits {
                max_templates: self.max_templates,
                max_bytes: self.max_template_bytes,
            },
            level_field: self.level_field.clone(),
            novelty_floor: self.novelty_floor,
            max_clock_skew_secs: i64::try_from(self.max_clock_skew_secs).unwrap_or(i64::MAX),
        })
    }

    /// The model loaded and the scorer the transform runs, as `eval` uses it too.
    pub fn build_scorer(&self) -> anyhow::Result<Scorer<Arc<LoadedModel>>> {
        let model = self.load_model()?;
        let settings = self.scorer_settings(&model)?;
        Ok(Scorer::new(model, settings))
    }
}

/// A running `deepsentry` transform.
pub struct DeepsentryTransform {
    config: DeepsentryTransformConfig,
    scorer: Scorer<Arc<LoadedModel>>,
    /// Where the online vocabulary is kept between runs (`data_dir/<id>/vocabulary.json`).
    state_path: PathBuf,
    /// Where retraining keeps its files (`data_dir/<id>/retrain`).
    retrain_root: PathBuf,
    /// The bundle the running model was loaded from.
    model_dir: PathBuf,
    /// The configured model's fingerprint, which a retrained model records as its base.
    base_fingerprint: String,
}

/// Publishes `deepsentry_model_info` for the model loaded from `dir`.
fn publish_model_info(metrics: &ComponentMetrics, dir: &std::path::Path, model: &LoadedModel) {
    metrics.info(
        "model",
        vec![
            ("path".into(), dir.display().to_string()),
            (
                "backend".into(),
                format!("{:?}", model.backend).to_lowercase(),
            ),
            (
                "sequence_length".into(),
                model.sequence_length().to_string(),
            ),
            (
                "templates".into(),
                model.metadata.templates.len().to_string(),
            ),
        ],
    );
}

/// A retraining in the background: where its outcome comes, its directory, and the flag that
/// stops it. Dropping it (the transform stopped: a shutdown, a reload that replaced it) stops
/// the training at its next batch, so a job nobody waits for does not use the CPU.
struct RetrainInFlight {
    outcome: tokio::sync::oneshot::Receiver<Outcome>,
    dir: PathBuf,
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for RetrainInFlight {
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Continual retraining while the transform runs (`retrain_every`).
struct Retraining {
    every: Duration,
    recent: RecentLines,
    next: tokio::time::Instant,
    swapped: Counter,
    refused: Counter,
    failed: Counter,
    skipped: Counter,
    /// Where `deepsentry_model_info` is published again after a swap.
    metrics: ComponentMetrics,
}

impl DeepsentryTransform {
    /// Sets up retraining when `retrain_every` asks for it: the next one is a period after the
    /// last one began (kept across restarts), and job directories a stopped run left go.
    fn retraining(&self, metrics: &ComponentMetrics) -> Option<Retraining> {
        let every = self.config.retrain_every?.0;
        let root = &self.retrain_root;
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("job-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let state = retrain::load_state(root);
        let now = chrono::Utc::now().timestamp();
        let wait = state
            .last_started
            .map_or(every.as_secs() as i64, |at| {
                at + every.as_secs() as i64 - now
            })
            .clamp(0, every.as_secs() as i64);
        Some(Retraining {
            every,
            recent: RecentLines::new(root.join("recent"), self.config.retrain_max_bytes),
            next: tokio::time::Instant::now() + Duration::from_secs(wait as u64),
            swapped: metrics.counter_with_reason("model_retrains", "swapped"),
            refused: metrics.counter_with_reason("model_retrains", "refused"),
            failed: metrics.counter_with_reason("model_retrains", "failed"),
            skipped: metrics.counter_with_reason("model_retrains", "skipped"),
            metrics: metrics.clone(),
        })
    }

    /// Starts a retraining on the lines kept since the last one; `None` when it cannot start
    /// (said and counted).
    fn start_retraining(&self, retraining: &mut Retraining) -> Option<RetrainInFlight> {
        retraining.next = tokio::time::Instant::now() + retraining.every;
        let now = chrono::Utc::now();
        let mut state = retrain::load_state(&self.retrain_root);
        state.last_started = Some(now.timestamp());
        if let Err(e) = retrain::save_state(&self.retrain_root, &state) {
            tracing::warn!("cannot record the retraining time: {e:#}");
        }
        let dir = self
            .retrain_root
            .join(format!("job-{}", now.timestamp_millis()));
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = retraining.recent.take(&dir).and_then(|inputs| {
            RetrainJob {
                running_dir: self.model_dir.clone(),
                running: self.scorer.model_handle().clone(),
                config: self.config.clone(),
                online: self.scorer.online_state(),
                dir: dir.clone(),
                inputs,
                cancel: cancel.clone(),
            }
            .spawn()
        });
        match started {
            Ok(outcome) => {
                tracing::info!(model = %self.model_dir.display(), "retraining the model on recent lines in the background");
                Some(RetrainInFlight {
                    outcome,
                    dir,
                    cancel,
                })
            }
            Err(e) => {
                tracing::warn!("cannot start retraining: {e:#}");
                retraining.failed.inc();
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    /// Acts on how a retraining ended: an accepted model becomes the retrained model in
    /// `data_dir` and replaces the running one here, between two batches.
    fn finish_retraining(
        &mut self,
        retraining: &Retraining,
        outcome: Option<Outcome>,
        dir: &std::path::Path,
    ) {
        match outcome {
            Some(Outcome::Accepted {
                model,
                dir: candidate,
                running,
                candidate: candidate_flags,
                held_out,
                trained_on,
                seconds,
            }) => {
                let swapped =
                    retrain::promote(&self.retrain_root, &candidate, &self.base_fingerprint)
                        .and_then(|()| self.scorer.replace_model(Arc::from(model)));
                match swapped {
                    Ok(()) => {
                        self.model_dir = self.retrain_root.join("model");
                        publish_model_info(
                            &retraining.metrics,
                            &self.model_dir,
                            self.scorer.model(),
                        );
                        retraining.swapped.inc();
                        tracing::info!(
                            trained_on,
                            held_out,
                            flagged_by_running = running,
                            flagged_by_retrained = candidate_flags,
                            seconds = format!("{seconds:.1}"),
                            model = %self.model_dir.display(),
                            "retrained model swapped in"
                        );
                    }
                    Err(e) => {
                        retraining.failed.inc();
                        tracing::warn!("the retrained model cannot be swapped in: {e:#}");
                    }
                }
            }
            Some(Outcome::Refused {
                running,
                candidate,
                held_out,
            }) => {
                retraining.refused.inc();
                tracing::warn!(
                    held_out,
                    flagged_by_running = running,
                    flagged_by_retrained = candidate,
                    "retrained model refused: it flags more of the latest lines than the running model"
                );
            }
            Some(Outcome::Skipped { lines }) => {
                retraining.skipped.inc();
                tracing::info!(
                    lines,
                    needed = retrain::MIN_RETRAIN_LINES,
                    "retraining skipped: too few normal lines in the period"
                );
            }
            Some(Outcome::Failed(e)) => {
                retraining.failed.inc();
                tracing::warn!("retraining failed; the running model stays: {e:#}");
            }
            None => {
                retraining.failed.inc();
                tracing::warn!(
                    "the retraining thread stopped without a result; the running model stays"
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// How often, at most, the online vocabulary is written while events flow.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(30);

impl DeepsentryTransform {
    /// Reads what an earlier run learned online; a missing file is a first start, an
    /// unreadable one (and no good backup) is said and ignored (the templates are learned
    /// again).
    fn restore_state(&mut self) {
        match deepsentry_core::checkpoint::load_json::<OnlineState>(&self.state_path) {
            Ok(None) => {}
            Ok(Some(state)) => {
                let templates = state.templates.len();
                self.scorer.restore_online_state(state);
                tracing::info!(path = %self.state_path.display(), templates, "templates learned online restored");
            }
            Err(e) => tracing::warn!(
                path = %self.state_path.display(),
                "the learned templates file is not usable ({e:#}); starting without it"
            ),
        }
    }

    /// Writes the online vocabulary (atomically, see
    /// [`deepsentry_core::checkpoint::write_atomic`]).
    fn save_state(&self) {
        let state = self.scorer.online_state();
        let saved = self
            .state_path
            .parent()
            .map_or(Ok(()), deepsentry_core::checkpoint::private_dir)
            .and_then(|()| deepsentry_core::checkpoint::save_json(&self.state_path, &state, false));
        if let Err(e) = saved {
            tracing::warn!(path = %self.state_path.display(), "cannot save the learned templates: {e:#}");
        }
    }
}

#[async_trait]
impl TransformConfig for DeepsentryTransformConfig {
    /// A digest of the model directory's files: a retrained model (files replaced) is a
    /// change that a reload picks up.
    fn fingerprint(&self) -> Option<String> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        if deepsentry_model::bundle::is_builtin(&self.model) {
            for (name, bytes) in deepsentry_model::bundle::builtin_files() {
                name.hash(&mut hasher);
                bytes.hash(&mut hasher);
            }
            return Some(format!("builtin-{:016x}", hasher.finish()));
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(&self.model) {
            Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            // Unreadable now: a reload rebuilds the transform and says why it cannot load.
            Err(e) => return Some(format!("unreadable: {e}")),
        };
        entries.sort();
        for path in entries {
            path.file_name().hash(&mut hasher);
            std::fs::read(&path).ok().hash(&mut hasher);
        }
        Some(format!("{:016x}", hasher.finish()))
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        // Loads the model and checks every key against it; writes nothing.
        let config = self.clone();
        tokio::task::spawn_blocking(move || config.build_scorer().map(drop)).await?
    }

    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Transform>> {
        let retrain_root = cx.data_dir.join(&cx.id).join("retrain");
        let base_fingerprint = self.fingerprint().unwrap_or_default();
        let retrained = retrain_root.join("model");
        // A model this transform retrained earlier, while the configuration still names the
        // model it was retrained from.
        let use_retrained = self.retrain_every.is_some()
            && retrained.join("model.yml").exists()
            && retrain::load_state(&retrain_root).base.as_deref() == Some(&base_fingerprint);
        let mut scorer = None;
        let mut model_dir = self.model.clone();
        if use_retrained {
            let mut config = self.clone();
            config.model = retrained.clone();
            match tokio::task::spawn_blocking(move || config.build_scorer()).await? {
                Ok(built) => {
                    scorer = Some(built);
                    model_dir = retrained;
                }
                Err(e) => tracing::warn!(
                    "the retrained model in {} is not usable ({e:#}); using {}",
                    retrained.display(),
                    self.model.display()
                ),
            }
        }
        let scorer = match scorer {
            Some(scorer) => scorer,
            None => {
                let config = self.clone();
                tokio::task::spawn_blocking(move || config.build_scorer()).await??
            }
        };
        let model = scorer.model();
        tracing::info!(
            model = %model_dir.display(),
            backend = ?model.backend,
            templates = model.metadata.templates.len(),
            sequence_length = model.sequence_length(),
            floor = model.score_floor(),
            "anomaly model loaded"
        );
        publish_model_info(&cx.component_metrics(), &model_dir, model);
        Ok(Box::new(DeepsentryTransform {
            config: self.clone(),
            scorer,
            state_path: cx.data_dir.join(&cx.id).join("vocabulary.json"),
            retrain_root,
            model_dir,
            base_fingerprint,
        }))
    }
}

/// Buckets of the `anomaly_score` histogram (scores are surprises in nats, plus reconstruction
/// error; the shipped model's threshold sits around 10).
const SCORE_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0];

/// Buckets of the `scoring_seconds` histogram (one batch of up to `batch_size` events).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Reports the scorer's counters, scores, threshold and latency as metrics.
struct Reporter {
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
    last: ScorerStats,
}

impl Reporter {
    fn new(metrics: &ComponentMetrics) -> Self {
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
            last: ScorerStats::default(),
        }
    }

    /// Records the scores and threshold of `events` just scored, and how long it took.
    fn scored(&self, events: &[Event], took: Duration) {
        self.latency.observe(took.as_secs_f64());
        for event in events {
            if let Some(score) = event.fields.number(keys::ANOMALY_SCORE) {
                self.scores.observe(score);
            }
        }
        if let Some(threshold) = events
            .iter()
            .rev()
            .find_map(|e| e.fields.number(keys::ANOMALY_THRESHOLD))
        {
            self.threshold.set(threshold);
        }
    }

    fn report(&mut self, now: ScorerStats, sessions_held: usize) {
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
        self.last = now;
    }
}

#[async_trait]
impl Transform for DeepsentryTransform {
    async fn run(mut self: Box<Self>, mut cx: TransformContext) -> anyhow::Result<()> {
        let interval = Duration::from_secs_f64(self.config.batch_interval.max(0.001));
        let mut reporter = Reporter::new(&cx.metrics);
        // Read here, not at build: on a reload the predecessor saves when it stops, which is
        // before its successor runs.
        tokio::task::block_in_place(|| self.restore_state());
        let mut saved_at = Instant::now();
        let mut retraining = self.retraining(&cx.metrics);
        let mut job: Option<RetrainInFlight> = None;
        let mut waiting = Batch::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        // While the input is quiet, sessions still time out (see `Scorer::tick`).
        let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retrain_idle = job.is_none();
            let retrain_due = async {
                match retraining.as_ref().map(|r| r.next) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retrain_done = async {
                match job.as_mut() {
                    Some(in_flight) => (&mut in_flight.outcome).await.ok(),
                    None => std::future::pending().await,
                }
            };
            let mut closed = false;
            tokio::select! {
                _ = retrain_due, if retrain_idle => {
                    if let Some(retraining) = retraining.as_mut() {
                        job = tokio::task::block_in_place(|| self.start_retraining(retraining));
                    }
                }
                outcome = retrain_done => {
                    if let (Some(in_flight), Some(retraining)) = (job.take(), retraining.as_ref()) {
                        // Between two batches: nothing is in flight in the scorer.
                        tokio::task::block_in_place(|| self.finish_retraining(retraining, outcome, &in_flight.dir));
                    }
                }
                batch = cx.input.recv() => match batch {
                    Some(batch) => {
                        waiting.append(batch);
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + interval);
                    }
                    None => closed = true,
                },
                _ = due => {}
                _ = ticks.tick(), if waiting.is_empty() && self.scorer.session_count() > 0 => {
                    let scorer = &mut self.scorer;
                    let ended = tokio::task::block_in_place(|| scorer.tick());
                    reporter.report(self.scorer.stats(), self.scorer.session_count());
                    if !ended.is_empty() && cx.out.send(Batch::new(ended)).await.is_err() {
                        self.save_state();
                        return Ok(());
                    }
                }
            }
            let due = deadline.is_some_and(|at| at <= tokio::time::Instant::now());
            if !waiting.is_empty() && (closed || due || waiting.len() >= self.config.batch_size) {
                deadline = None;
                let mut batch = std::mem::take(&mut waiting);
                let acks = batch.take_acks();
                let scorer = &mut self.scorer;
                // Scoring is CPU work: keep the other tasks of this worker thread moving.
                let started = Instant::now();
                let recent = retraining.as_mut().map(|r| &mut r.recent);
                let scored = tokio::task::block_in_place(|| {
                    let scored = scorer.process(batch.events);
                    if let Some(recent) = recent {
                        recent.record(&scored);
                    }
                    scored
                });
                reporter.scored(&scored, started.elapsed());
                let mut out = Batch::new(scored);
                out.add_acks(acks);
                reporter.report(self.scorer.stats(), self.scorer.session_count());
                if saved_at.elapsed() >= STATE_SAVE_INTERVAL {
                    tokio::task::block_in_place(|| self.save_state());
                    saved_at = Instant::now();
                }
                if cx.out.send(out).await.is_err() {
                    self.save_state();
                    return Ok(());
                }
            }
            if closed {
                break;
            }
        }
        self.save_state();
        if cx.shutdown.is_triggered() {
            // Stopping is not the end of the sessions: judging them unfinished would raise an
            // alert for every block in flight at each restart.
            tracing::info!(
                transform = %cx.id,
                open_sessions = self.scorer.session_count(),
                "shutting down; open sessions are not judged"
            );
            return Ok(());
        }
        // The input ended (end of a replay, of standard input): every open session ends here,
        // a batch at a time, so a hundred thousand open sessions do not become a hundred
        // thousand events in memory at once.
        loop {
            let scorer = &mut self.scorer;
            let batch_size = self.config.batch_size.max(1);
            let ends = tokio::task::block_in_place(|| scorer.finish_some(batch_size));
            reporter.report(self.scorer.stats(), self.scorer.session_count());
            if ends.is_empty() || cx.out.send(Batch::new(ends)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

//! The `deepsentry` transform's keys, their checks, and building the transform.

use std::path::PathBuf;
use std::sync::Arc;

use crate::retrain::{self, Period};
use crate::{publish_model_info, DeepsentryTransform};
use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::{BuildContext, Transform, TransformConfig};
use deepsentry_model::novelty::VocabularyLimits;
use deepsentry_model::scorer::AlertGrouping;
use deepsentry_model::session_key::SessionKeySpec;
use deepsentry_model::{
    BackendKind, LoadedModel, Scorer, ScorerSettings, SequenceModel, SessionKey,
};
use regex::Regex;
use serde::Deserialize;

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
    /// What the alerts of new templates are grouped by: `burst` (the default: new templates of
    /// one severity in one stream within `alert_group_secs` are one alert) or `template` (one
    /// alert per new template).
    #[serde(default)]
    pub alert_group_by: AlertGrouping,
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
            alert_group_by: AlertGrouping::default(),
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
            alert_grouping: self.alert_group_by,
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

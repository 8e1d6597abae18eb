//! What `model.yml` holds: the sizes of both networks, the templates, the invariants, the
//! class prior, the novelty statistics and the training summary.

use serde::{Deserialize, Serialize};

use crate::autoencoder::TextAutoencoderConfig;
use crate::detector::{message_vector_width, DetectorKind, SequenceDetectorConfig};
use crate::invariants::Invariant;
use crate::novelty::NoveltyStats;

/// Sizes of both models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSizes {
    /// Hashed feature vector length.
    pub feature_dims: usize,
    /// Autoencoder hidden width.
    pub autoencoder_hidden: usize,
    /// Embedding size.
    pub embedding_size: usize,
    /// Width of the detector's layers (the GRU's state size).
    pub detector_hidden: usize,
    /// Previous events per window.
    pub sequence_length: usize,
    /// Which network the detector is.
    #[serde(default = "DetectorKind::unspecified")]
    pub detector: DetectorKind,
    /// Window networks the detector averages (1 for a GRU).
    #[serde(default = "one")]
    pub detector_members: usize,
}

fn one() -> usize {
    1
}

/// The largest size of any one dimension a bundle may declare: far above what training
/// makes (hundreds), far below what would exhaust memory when the layers are allocated.
const MAX_DIMENSION: usize = 1 << 16;

impl ModelSizes {
    /// Refuses sizes no layer can be built with: zero, or absurdly large.
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, value, max) in [
            ("feature_dims", self.feature_dims, MAX_DIMENSION),
            ("autoencoder_hidden", self.autoencoder_hidden, MAX_DIMENSION),
            ("embedding_size", self.embedding_size, MAX_DIMENSION),
            ("detector_hidden", self.detector_hidden, MAX_DIMENSION),
            ("sequence_length", self.sequence_length, 64),
            ("detector_members", self.detector_members, 64),
        ] {
            anyhow::ensure!(
                (1..=max).contains(&value),
                "`{name}` is {value}; it must be between 1 and {max}"
            );
        }
        Ok(())
    }
}

/// What training saw and learned, kept with the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    /// Files trained on.
    pub inputs: Vec<String>,
    /// Lines read.
    pub lines: u64,
    /// Sessions found.
    pub sessions: u64,
    /// Sessions held out to calibrate the threshold floor.
    pub held_out_sessions: u64,
    /// The session key regex, if one was used (given, or found by `session_key: auto`).
    pub session_key: Option<String>,
    /// The shape of id `session_key: auto` found (e.g. `program[pid]`); absent when the key
    /// was given or none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key_found: Option<String>,
    /// Whether training joined the lines of multi-line events (stack traces) into one event
    /// each: the events a pipeline's source must make for the model to know them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined_lines: bool,
    /// Epochs of each model.
    pub epochs: usize,
    /// Chance that neighbours seen in both orders were swapped in a training pass (0 for a
    /// model of one stream, and for bundles trained before it was read).
    #[serde(default)]
    pub order_noise: f64,
    /// Random seed.
    pub seed: u64,
    /// Final autoencoder loss (mean squared error).
    pub autoencoder_loss: f64,
    /// Final detector loss (cross-entropy, nats).
    pub detector_loss: f64,
    /// Mean score of held-out normal events.
    pub score_mean: f64,
    /// Standard deviation of held-out normal scores.
    pub score_std: f64,
    /// Highest score of a held-out normal session.
    pub score_max: f64,
    /// 99th percentile of the held-out sessions' highest scores.
    #[serde(default)]
    pub score_p99: f64,
    /// The threshold never goes below this.
    pub score_floor: f64,
    /// Typical reconstruction error of a training template (scales unseen templates' scores).
    pub reconstruction_scale: f64,
    /// Longest pause between two lines of one session (seconds); sessions idle longer than
    /// this were not seen in training.
    pub max_session_gap_secs: i64,
    /// Wall-clock training time (seconds).
    pub duration_secs: f64,
    /// Whether training saw many sessions, and so learned how they end; a model trained on a
    /// few streams (a sidecar's log) does not judge where a session ends.
    #[serde(default)]
    pub learned_session_ends: bool,
    /// The bundle this one updated (`train --from`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_from: Option<String>,
    /// Lines the earlier trainings of an updated bundle read (not counted in `lines`).
    #[serde(default)]
    pub earlier_lines: u64,
}

/// The detector's prediction is mixed with how often each class came in training:
/// `p = (1 - weight) p_detector + weight p_prior`. The weight is learned on held-out data
/// (the mixture that explains it best): near zero where sessions make the next event
/// predictable, larger where one interleaved stream leaves the detector overconfident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPrior {
    /// The prior's share of the mixture (0: the detector alone).
    pub weight: f64,
    /// Probability of each class (templates, end, unknown), summing to 1.
    pub probabilities: Vec<f32>,
    /// The held-out events' log-likelihood under each weight training chose from (the
    /// evidence the weight was chosen on), which an update adds its own to: a few new logs
    /// alone would choose on a few dozen events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<f64>,
}

impl ClassPrior {
    /// The prior mixed into `log_p`, the detector's log-probability of `class`. Mixed one
    /// class at a time, as the scorer looks it up: a window's row has every class, an event
    /// needs one.
    pub fn mixed(&self, class: usize, log_p: f32) -> f32 {
        match self.probabilities.get(class) {
            Some(&prior) if self.weight > 0.0 => {
                let w = self.weight as f32;
                ((1.0 - w) * log_p.exp() + w * prior)
                    .max(f32::MIN_POSITIVE)
                    .ln()
            }
            _ => log_p,
        }
    }
}

/// Contents of `model.yml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    /// Bundle format version.
    pub format_version: u32,
    /// Normalizer rules version.
    pub normalizer_version: u32,
    /// Sizes of both models.
    pub sizes: ModelSizes,
    /// Training templates, in class order.
    pub templates: Vec<String>,
    /// Count relations that held in the training sessions, checked when a session ends.
    #[serde(default)]
    pub invariants: Vec<Invariant>,
    /// How often the training data brought new templates, and how common each severity was.
    pub novelty: NoveltyStats,
    /// How often each class followed in training, mixed into the detector's prediction.
    #[serde(default)]
    pub prior: ClassPrior,
    /// Training statistics.
    pub training: TrainingSummary,
}

impl ModelMetadata {
    /// Detector classes: every template, then end-of-session, then unknown.
    pub fn classes(&self) -> usize {
        self.templates.len() + 2
    }

    pub(crate) fn autoencoder_config(&self) -> TextAutoencoderConfig {
        TextAutoencoderConfig::new(
            self.sizes.feature_dims,
            self.sizes.autoencoder_hidden,
            self.sizes.embedding_size,
        )
    }

    /// Width of the vector the detector reads per message.
    pub fn message_vector_width(&self) -> usize {
        message_vector_width(self.sizes.embedding_size, self.templates.len())
    }

    pub(crate) fn detector_config(&self) -> SequenceDetectorConfig {
        SequenceDetectorConfig {
            kind: self.sizes.detector,
            input: self.message_vector_width() + 1,
            steps: self.sizes.sequence_length,
            hidden: self.sizes.detector_hidden,
            classes: self.classes(),
            members: self.sizes.detector_members,
        }
    }
}

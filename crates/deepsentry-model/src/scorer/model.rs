//! What the scorer needs from a trained model.

use crate::invariants::Invariant;
use crate::novelty::NoveltyStats;

/// How the scorer sees one template after the autoencoder encoded it.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The vector the detector reads.
    pub vector: Vec<f32>,
    /// The reconstruction error.
    pub error: f32,
    /// The training class: the template's own, or that of the training template it is a
    /// variant of.
    pub class: Option<usize>,
    /// Whether `class` is a similar training template's.
    pub variant: bool,
}

/// What the scorer needs from a trained model; [`crate::bundle::LoadedModel`] is the real one.
pub trait SequenceModel {
    /// How many previous events form a window.
    fn sequence_length(&self) -> usize;
    /// The class meaning "the session ended".
    fn end_class(&self) -> usize;
    /// Encodes templates in one batch: vectors, errors and the classes they map to.
    fn embed(&self, templates: &[&str]) -> Vec<Embedded>;
    /// The detector's log-probabilities of every class after each window; a window is the
    /// vectors of up to `sequence_length` previous events, oldest first. What the model mixes
    /// into them is applied by [`SequenceModel::mixed`].
    fn log_probs(&self, windows: &[Vec<&[f32]>]) -> Vec<Vec<f32>>;
    /// `log_p`, a log-probability of `class` from [`SequenceModel::log_probs`], with what the
    /// model mixes into its predictions (the class prior); as it is by default.
    fn mixed(&self, _class: usize, log_p: f32) -> f32 {
        log_p
    }
    /// How often `class` came in training, where the model keeps it (the class prior).
    fn prior(&self, _class: usize) -> Option<f32> {
        None
    }
    /// The score below which nothing is flagged, learned in training.
    fn score_floor(&self) -> f64;
    /// How often the system brings new templates, and how common each severity is.
    fn novelty(&self) -> &NoveltyStats;
    /// Whether the model learned where sessions end (trained on many sessions); when not, a
    /// session's end is reported but never flagged.
    fn judges_session_ends(&self) -> bool {
        true
    }
    /// Whether the model was trained on multi-line events (stack traces) joined into one.
    fn joined_lines(&self) -> bool {
        false
    }
    /// Count relations every normal session satisfies when it ends.
    fn invariants(&self) -> &[Invariant] {
        &[]
    }
    /// The training templates, in class order (to explain a broken invariant, to name the
    /// expected templates).
    fn templates(&self) -> &[String] {
        &[]
    }
}

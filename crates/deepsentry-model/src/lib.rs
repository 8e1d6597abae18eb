//! The models behind the `deepsentry` transform, on burn.
//!
//! - [`normalize`]: masks the variable parts of a line into a template;
//! - [`features`]: hashed token features of a template;
//! - [`autoencoder`]: the text autoencoder (embedding + reconstruction error);
//! - [`detector`]: the sequence detector (next-template distribution after a window);
//! - [`invariants`]: count relations between templates, mined in training, checked when a
//!   session ends;
//! - [`severity`]: the level a line names or its words imply;
//! - [`novelty`]: how often a system brings new templates (learned in training) and the
//!   bounded online vocabulary of templates met since;
//! - [`alerts`]: reasons and alert grouping;
//! - [`threshold`]: the adaptive threshold;
//! - [`session_key`]: finding the key that splits an interleaved stream into sessions;
//! - [`sessions`]: bounded per-session state;
//! - [`scorer`]: the streaming detector that ties them together (used by the pipeline and by
//!   evaluation alike);
//! - [`bundle`]: saving and loading a trained model;
//! - [`train`]: training on normal logs;
//! - [`backend`]: choosing the device (CPU backends, or the GPU with the `gpu` feature).

pub mod alerts;
pub mod autoencoder;
pub mod backend;
pub mod bundle;
pub mod detector;
pub mod features;
pub mod invariants;
pub mod normalize;
pub mod novelty;
pub mod scorer;
pub mod session_key;
pub mod sessions;
pub mod severity;
pub mod threshold;
pub mod train;

pub use backend::BackendKind;
pub use bundle::LoadedModel;
pub use scorer::{Scorer, ScorerSettings, SequenceModel, SessionKey};
pub use train::{train, TrainOptions};

//! Training both models on normal logs.
//!
//! 1. Every line is normalized to its template and assigned to its session.
//! 2. The text autoencoder learns to reconstruct the hashed features of the distinct
//!    templates; its encoder then gives each template its embedding.
//! 3. A share of the sessions is held out. On the others, the sequence detector learns to
//!    predict each event's template (and each session's end) from the vectors of the
//!    previous `sequence_length` events. Sessions with the same template sequence are learned
//!    once: the detector should know which continuations are possible, and a path taken by
//!    thousands of blocks would otherwise drown one taken by a dozen.
//! 4. The held-out sessions are scored by the same [`Scorer`] the pipeline runs; the floor of
//!    the threshold is set `floor_margin` times less likely than the least likely event of
//!    the 99th-percentile held-out session, so a quiet baseline does not turn noise into
//!    alerts.
//! 5. Count invariants are mined from all sessions (see [`crate::invariants`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use deepsentry_core::rng::SplitMix64;
use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;

use crate::autoencoder::TextAutoencoderConfig;
use crate::backend::{self, BackendKind};
use crate::bundle::{
    read_session_tally, ClassPrior, LoadedModel, ModelMetadata, ModelSizes, TrainingSummary,
    FORMAT_VERSION, NORMALIZER_VERSION,
};
use crate::detector::{
    message_code, message_vector_width, window_input, DetectorKind, SequenceDetectorConfig,
};
use crate::features::hashed_features;
use crate::invariants::{mine_counts, MiningOptions, SessionTally};
use crate::novelty::NoveltyStats;
use crate::scorer::SessionKey;
use crate::session_key::SessionKeySpec;
use deepsentry_core::lines::{LineSettings, DEFAULT_MAX_LINE_BYTES};

mod calibrate;
mod corpus;

use calibrate::{calibrate, learn_prior, PriorSoFar};
pub use corpus::REPLAY_LINES;
use corpus::{
    assign_sessions, before_tail, held_out_sessions, pass_sessions, read_corpus, replay_sample,
    resolve_session_key, tally_sessions, unordered_pairs,
};

/// Everything `deepsentry train` can set.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Files of normal logs.
    pub inputs: Vec<PathBuf>,
    /// Most lines (events) trained on: the last ones of the inputs, read in order, so that
    /// the memory and time a training takes are bounded whatever the inputs hold; 0 for all.
    pub max_lines: usize,
    /// How the inputs' lines become events (multiline joining, decoding), as a source's
    /// settings would make them.
    pub lines: LineSettings,
    /// How lines are grouped into sessions: a regex whose first capture group (or match) is
    /// the session id, one session per file, or (the default) a key found in the data (see
    /// [`crate::session_key`]).
    pub session_key: SessionKeySpec,
    /// Previous events per window.
    pub sequence_length: usize,
    /// Embedding size.
    pub embedding_size: usize,
    /// Hashed feature vector length.
    pub feature_dims: usize,
    /// Autoencoder hidden width.
    pub autoencoder_hidden: usize,
    /// Width of the detector's layers (the GRU's state size).
    pub detector_hidden: usize,
    /// Which network the detector is (an update keeps the one of the bundle it updates).
    pub detector: DetectorKind,
    /// Window networks trained side by side and averaged.
    pub detector_members: usize,
    /// Passes over the windows of the distinct training sessions.
    pub epochs: usize,
    /// Most windows the detector is trained on over all its passes (0: no bound): a long log
    /// of one stream, whose every line starts a window, gets fewer passes than `epochs`, at
    /// least one, so that its training time stays bounded as its memory is ([`Self::max_lines`]).
    pub max_windows: usize,
    /// Seed for initialization, shuffling and the held-out split.
    pub seed: u64,
    /// Where to train.
    pub backend: BackendKind,
    /// Windows per gradient step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Share of sessions held out for calibration.
    pub holdout: f64,
    /// How many times less likely an event must be than the least likely event of a typical
    /// held-out session to pass the floor: the floor is the 99th percentile of the held-out
    /// sessions' highest scores plus `ln(floor_margin)` nats.
    pub floor_margin: f64,
    /// Chance that two neighbouring events of a training session are swapped in a pass,
    /// where the training sessions show those two templates next to each other in both
    /// orders, so that the detector learns that they may arrive in either order (several
    /// writers, clock skew). Sessions only: a model of one stream keeps the order it was
    /// written in.
    pub order_noise: f64,
    /// Whether to mine count invariants.
    pub invariants: bool,
    /// Whether the bundle keeps a replay sample of the training lines for later updates
    /// (see [`crate::bundle::REPLAY_FILE`]).
    pub replay: bool,
    /// Show progress bars (on a terminal).
    pub progress: bool,
    /// A bundle to update instead of starting afresh (`train --from`): its templates keep
    /// their classes, new ones are added, both networks are fine-tuned from its weights, and
    /// its sizes and session key are kept (the options' sizes are not used).
    pub from: Option<PathBuf>,
    /// Set from elsewhere to stop the training at its next batch (it then fails with
    /// "training was cancelled"): a background retraining whose transform stopped.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl TrainOptions {
    fn check_cancelled(&self) -> anyhow::Result<()> {
        match &self.cancel {
            Some(cancel) if cancel.load(Ordering::Relaxed) => {
                anyhow::bail!("training was cancelled")
            }
            _ => Ok(()),
        }
    }
}

/// Training's defaults, shared by [`TrainOptions::default`] and the `train` command's flags.
pub mod defaults {
    /// Previous events per window.
    pub const SEQUENCE_LENGTH: usize = 10;
    /// Size of the message embedding.
    pub const EMBEDDING_SIZE: usize = 16;
    /// Width of the sequence detector's layers.
    pub const DETECTOR_HIDDEN: usize = 128;
    /// Window networks averaged.
    pub const DETECTOR_MEMBERS: usize = 3;
    /// Passes over the distinct training sessions.
    pub const EPOCHS: usize = 40;
    /// Passes when updating a bundle (`train --from`): fine-tuning, not learning anew.
    pub const UPDATE_EPOCHS: usize = 10;
    /// Most windows trained on over all passes: 40 passes over 25,000 lines of one stream.
    /// A log of a million lines then trains one pass: 307 s on two cores with 958 templates
    /// (the classes' count sets a window's cost), where forty would take hours. Sessions that
    /// repeat (HDFS blocks) are trained on once per distinct session and stay far under it.
    pub const MAX_WINDOWS: usize = 1_000_000;
    /// The seed.
    pub const SEED: u64 = 42;
    /// Share of sessions held out to calibrate the threshold floor.
    pub const HOLDOUT: f64 = 0.1;
    /// How many times less likely than the 99th-percentile held-out session's least likely
    /// event an event must be to pass the threshold floor.
    pub const FLOOR_MARGIN: f64 = 200.0;
    /// Chance that neighbours seen in both orders are swapped in a training pass.
    pub const ORDER_NOISE: f64 = 0.5;
    /// Most lines trained on (the last of the inputs): about 1 GB and five minutes on two
    /// cores (with [`MAX_WINDOWS`]).
    pub const MAX_LINES: usize = 1_000_000;
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            inputs: Vec::new(),
            max_lines: defaults::MAX_LINES,
            lines: LineSettings::plain(DEFAULT_MAX_LINE_BYTES),
            session_key: SessionKeySpec::Auto,
            sequence_length: defaults::SEQUENCE_LENGTH,
            embedding_size: defaults::EMBEDDING_SIZE,
            feature_dims: 512,
            autoencoder_hidden: 64,
            detector_hidden: defaults::DETECTOR_HIDDEN,
            detector: DetectorKind::default(),
            detector_members: defaults::DETECTOR_MEMBERS,
            epochs: defaults::EPOCHS,
            max_windows: defaults::MAX_WINDOWS,
            seed: defaults::SEED,
            backend: BackendKind::default(),
            batch_size: 256,
            learning_rate: 3e-3,
            holdout: defaults::HOLDOUT,
            floor_margin: defaults::FLOOR_MARGIN,
            order_noise: defaults::ORDER_NOISE,
            invariants: true,
            replay: true,
            progress: false,
            from: None,
            cancel: None,
        }
    }
}

/// Passes over `windows` training windows: `epochs`, or as many as train on at most
/// `max_windows` windows in all, and at least one (0: no bound).
fn passes(epochs: usize, windows: usize, max_windows: usize) -> usize {
    if max_windows == 0 || windows == 0 {
        return epochs;
    }
    epochs.min(max_windows / windows).max(1)
}

/// A progress bar of `len` steps labelled `what` on stderr, or a hidden one unless `show`
/// (callers pass whether stderr is a terminal: long work stays quiet in logs and pipes).
pub fn progress_bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Trains a model; see the module docs. Logs a summary at the end.
pub fn train(options: &TrainOptions) -> anyhow::Result<LoadedModel> {
    let started = Instant::now();
    anyhow::ensure!(!options.inputs.is_empty(), "no training input given");
    anyhow::ensure!(
        (0.0..1.0).contains(&options.order_noise),
        "order noise {} is not a share: give a number from 0 up to (not including) 1",
        options.order_noise
    );
    anyhow::ensure!(
        (1..=64).contains(&options.sequence_length),
        "sequence_length must be between 1 and 64"
    );
    let base = match &options.from {
        Some(dir) => Some(
            LoadedModel::load(dir, options.backend)
                .with_context(|| format!("cannot load the model to update in {}", dir.display()))?,
        ),
        None => None,
    };
    let known_before = base.as_ref().map_or(&[][..], |b| &b.metadata.templates[..]);
    // An update trains on the bundle's replay sample of its old logs too (read first, as the
    // older lines).
    let replay = options
        .from
        .as_ref()
        .map(|dir| dir.join(crate::bundle::REPLAY_FILE))
        .filter(|path| path.is_file());
    let with_replay;
    let options = match &replay {
        Some(path) => {
            with_replay = TrainOptions {
                inputs: std::iter::once(path.clone())
                    .chain(options.inputs.iter().cloned())
                    .collect(),
                ..options.clone()
            };
            &with_replay
        }
        None => options,
    };
    let mut corpus = read_corpus(options, known_before)?;
    let (key, found_key) = match &base {
        // An update keeps the bundle's sessions unless told otherwise.
        Some(base) if matches!(options.session_key, SessionKeySpec::Auto) => {
            let training = &base.metadata.training;
            let key = match &training.session_key {
                Some(pattern) => SessionKey::Regex(Regex::new(pattern).with_context(|| {
                    format!("the model to update has a bad session key `{pattern}`")
                })?),
                None => SessionKey::Stream,
            };
            (key, training.session_key_found.clone())
        }
        _ => resolve_session_key(options, &corpus)?,
    };
    if !matches!(key, SessionKey::Stream) {
        assign_sessions(&mut corpus, &key);
    }
    tracing::info!(
        lines = corpus.lines.len(),
        templates = corpus.templates.len(),
        sessions = corpus.sessions.len(),
        "training data read"
    );

    let (device, backend) = backend::device(options.backend)?;
    let train_device = device.clone().autodiff();
    train_device.seed(options.seed);
    let mut rng = SplitMix64::new(options.seed);

    // --- Text autoencoder on the distinct templates (an update's known ones included, so
    // their embeddings stay where the detector learned them).
    let sizes = match &base {
        Some(base) => base.metadata.sizes.clone(),
        None => ModelSizes {
            feature_dims: options.feature_dims,
            autoencoder_hidden: options.autoencoder_hidden,
            embedding_size: options.embedding_size,
            detector_hidden: options.detector_hidden,
            sequence_length: options.sequence_length,
            detector: options.detector,
            detector_members: match options.detector {
                DetectorKind::Gru => 1,
                DetectorKind::Window => options.detector_members.max(1),
            },
        },
    };
    let features: Vec<Vec<f32>> = corpus
        .templates
        .iter()
        .map(|t| hashed_features(t, sizes.feature_dims))
        .collect();
    let ae_config = TextAutoencoderConfig::new(
        sizes.feature_dims,
        sizes.autoencoder_hidden,
        sizes.embedding_size,
    );
    let mut autoencoder = match &base {
        Some(base) => base.autoencoder.clone().fork(&train_device).train(),
        None => ae_config.init(&train_device),
    };
    let mut optimizer = AdamConfig::new().init();
    let ae_steps = 300.max(options.epochs * corpus.templates.len().div_ceil(options.batch_size));
    let bar = progress_bar(options.progress, ae_steps as u64, "autoencoder");
    let mut order: Vec<usize> = (0..features.len()).collect();
    let mut ae_loss = 0.0;
    for step in 0..ae_steps {
        let batch = options.batch_size.min(order.len());
        let start = (step * batch) % order.len();
        if start < batch {
            rng.shuffle(&mut order);
        }
        let rows: Vec<f32> = order
            .iter()
            .cycle()
            .skip(start)
            .take(batch)
            .flat_map(|&i| features[i].iter().copied())
            .collect();
        let input = Tensor::<2>::from_data(
            TensorData::new(rows, [batch, sizes.feature_dims]),
            &train_device,
        );
        let (_, error) = autoencoder.forward(input);
        let loss = error.mean();
        let grads = GradientsParams::from_grads(loss.backward(), &autoencoder);
        autoencoder = optimizer.step(options.learning_rate, autoencoder, grads);
        ae_loss = f64::from(loss.into_scalar::<f32>());
        bar.inc(1);
        options.check_cancelled()?;
    }
    bar.finish_and_clear();
    let autoencoder = autoencoder.valid();

    // --- Embeddings of the training templates.
    let all = Tensor::<2>::from_data(
        TensorData::new(features.concat(), [features.len(), sizes.feature_dims]),
        &device,
    );
    let (embeddings, errors) = autoencoder.forward(all);
    let known = corpus.templates.len();
    let vectors: Vec<Vec<f32>> = embeddings
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .chunks(sizes.embedding_size)
        .enumerate()
        .map(|(class, embedding)| message_code(embedding, Some(class)))
        .collect();
    let vector_width = message_vector_width(sizes.embedding_size, known);
    let mut errors = errors
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    errors.sort_by(f32::total_cmp);
    let reconstruction_scale =
        f64::from(errors[(errors.len() * 99 / 100).min(errors.len() - 1)]).max(1e-4);

    // --- Sequence detector on the windows of the training sessions. With many sessions a
    // share of them is held out; with a few (one stream: a sidecar's log) the last share of
    // each input file's lines is, which is also what the model meets next in production.
    // A key found in one stream splits it for the windows' sake; its sessions are not units
    // whose ends mean anything, so that stream is held out and judged line by line too.
    let by_sessions = found_key.is_none() && corpus.sessions.len() >= 20;
    let is_held_out: Vec<bool> = if by_sessions {
        held_out_sessions(
            &corpus.sessions,
            &corpus.session_names,
            options.seed,
            options.holdout,
        )
    } else {
        vec![false; corpus.sessions.len()]
    };
    let training_part: Vec<&[u32]> = if by_sessions {
        corpus.sessions.iter().map(Vec::as_slice).collect()
    } else {
        before_tail(&corpus, options.holdout)
    };
    let end_class = corpus.templates.len() as u32;
    let steps = sizes.sequence_length;
    let mut samples: Vec<(u32, u32, u32)> = Vec::new(); // (session, position, target)
    let mut distinct: std::collections::HashSet<&[u32]> = std::collections::HashSet::new();
    for (s, session) in training_part.iter().enumerate() {
        if is_held_out[s] || (by_sessions && !distinct.insert(session)) {
            continue;
        }
        // A stream cut for the hold-out did not end there.
        let last = if by_sessions || session.len() == corpus.sessions[s].len() {
            session.len()
        } else {
            session.len().saturating_sub(1)
        };
        for i in 0..=last {
            let target = session.get(i).copied().unwrap_or(end_class);
            samples.push((s as u32, i as u32, target));
        }
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "no training session left after the hold-out"
    );
    let classes = corpus.templates.len() + 2;
    let detector_config = SequenceDetectorConfig {
        kind: sizes.detector,
        input: vector_width + 1,
        steps,
        hidden: sizes.detector_hidden,
        classes,
        members: sizes.detector_members,
    };
    let mut detector = match &base {
        Some(base) => {
            let known = base.metadata.templates.len();
            base.detector
                .clone()
                .grow(sizes.embedding_size, known, corpus.templates.len() - known)
                .fork(&train_device)
                .train()
        }
        None => detector_config.init(&train_device),
    };
    let mut optimizer = AdamConfig::new().init();
    let batches_per_epoch = samples.len().div_ceil(options.batch_size);
    let epochs = passes(options.epochs, samples.len(), options.max_windows);
    if epochs < options.epochs {
        tracing::info!(
            windows = samples.len(),
            passes = epochs,
            max_windows = options.max_windows,
            "a long log: fewer passes over its windows, so that training time stays bounded"
        );
    }
    let bar = progress_bar(
        options.progress,
        (epochs * batches_per_epoch) as u64,
        "detector",
    );
    let mut detector_loss = 0.0;
    let order_noise = Some(options.order_noise)
        .filter(|_| by_sessions)
        .unwrap_or(0.0);
    let mut used = vec![false; corpus.sessions.len()];
    for &(s, _, _) in &samples {
        used[s as usize] = true;
    }
    let mut order_rng = SplitMix64::new(options.seed ^ 0x6a05_7e1e_d0e5_0001);
    let unordered = unordered_pairs(&corpus.sessions, &used);
    for _epoch in 0..epochs {
        rng.shuffle(&mut samples);
        let sessions = pass_sessions(
            &corpus.sessions,
            &used,
            order_noise,
            &unordered,
            &mut order_rng,
        );
        let mut epoch_loss = 0.0;
        for chunk in samples.chunks(options.batch_size) {
            let windows: Vec<Vec<&[f32]>> = chunk
                .iter()
                .map(|&(s, i, _)| {
                    let session = &sessions[s as usize];
                    let i = i as usize;
                    session[i.saturating_sub(steps)..i]
                        .iter()
                        .map(|&t| vectors[t as usize].as_slice())
                        .collect()
                })
                .collect();
            let input = window_input(&windows, steps, sizes.embedding_size, known, &train_device);
            // The event at that place of the session as this pass reads it (jostled or not);
            // past its end, the end.
            let targets: Vec<i64> = chunk
                .iter()
                .map(|&(s, i, t)| {
                    i64::from(sessions[s as usize].get(i as usize).copied().unwrap_or(t))
                })
                .collect();
            let targets =
                Tensor::<1, Int>::from_data(TensorData::new(targets, [chunk.len()]), &train_device);
            let loss = detector.loss(input, targets);
            let grads = GradientsParams::from_grads(loss.backward(), &detector);
            detector = optimizer.step(options.learning_rate, detector, grads);
            epoch_loss += f64::from(loss.into_scalar::<f32>()) * chunk.len() as f64
                / detector.members() as f64;
            bar.inc(1);
            options.check_cancelled()?;
        }
        detector_loss = epoch_loss / samples.len() as f64;
        tracing::debug!(loss = detector_loss, "detector epoch");
    }
    bar.finish_and_clear();
    let detector = detector.valid();

    let metadata = ModelMetadata {
        format_version: FORMAT_VERSION,
        normalizer_version: NORMALIZER_VERSION,
        sizes,
        templates: corpus.templates.clone(),
        invariants: Vec::new(),
        prior: ClassPrior::default(),
        // An update counts its new logs only (the replay sample's lines are in the bundle's
        // counts, which it adds to), and its bundle has shown its templates already: a line of
        // one (or of a field of one) is no news however late it comes in the new logs.
        novelty: NoveltyStats::learn(
            &corpus::novelty_lines(
                &corpus
                    .lines
                    .iter()
                    .zip(&corpus.line_origin)
                    .filter(|(_, &file)| base.is_none() || replay.is_none() || file != 0)
                    .map(|(l, _)| match (l.template as usize) < known_before.len() {
                        true => (l.template, l.severity),
                        false => (l.shape, l.severity),
                    })
                    .collect::<Vec<_>>(),
                &corpus.shapes,
                known_before.len(),
            ),
            known_before.len() as u32,
        )
        .after(
            &base
                .as_ref()
                .map(|b| b.metadata.novelty.clone())
                .unwrap_or_default(),
        ),
        training: TrainingSummary {
            inputs: options
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            lines: corpus.lines.len() as u64,
            sessions: corpus.sessions.len() as u64,
            held_out_sessions: is_held_out.iter().filter(|h| **h).count() as u64,
            session_key: match &key {
                SessionKey::Regex(re) => Some(re.as_str().to_string()),
                _ => None,
            },
            session_key_found: found_key,
            // An update keeps knowing the joined events its base was trained on.
            joined_lines: options.lines.multiline.is_some()
                || base
                    .as_ref()
                    .is_some_and(|b| b.metadata.training.joined_lines),
            epochs,
            order_noise,
            seed: options.seed,
            autoencoder_loss: ae_loss,
            detector_loss,
            reconstruction_scale,
            // The longest pause of all the training logs: an update's quieter period must not
            // shorten how long the transform waits before it ends a session.
            max_session_gap_secs: base.as_ref().map_or(corpus.max_gap, |base| {
                corpus
                    .max_gap
                    .max(base.metadata.training.max_session_gap_secs)
            }),
            learned_session_ends: by_sessions,
            updated_from: options.from.as_ref().map(|d| d.display().to_string()),
            earlier_lines: base.as_ref().map_or(0, |b| {
                b.metadata.training.lines + b.metadata.training.earlier_lines
            }),
            ..TrainingSummary::default()
        },
    };
    // What the bundle being updated learned of how often each class comes, as counts.
    let counts: Vec<f64> = match &base {
        Some(base) => {
            let old = &base.metadata;
            let total =
                (old.training.lines + old.training.earlier_lines + old.training.sessions) as f64;
            let known = old.templates.len();
            let mut counts = vec![0.0; metadata.classes()];
            for (class, p) in old.prior.probabilities.iter().enumerate() {
                // End and unseen come after the added templates now.
                let to = if class < known {
                    class
                } else {
                    class - known + corpus.templates.len()
                };
                if let Some(c) = counts.get_mut(to) {
                    *c = f64::from(*p) * total;
                }
            }
            counts
        }
        None => Vec::new(),
    };
    let mut model = LoadedModel::new(metadata, autoencoder, detector, device, backend);
    if options.replay {
        model.replay = replay_sample(&corpus);
    }
    let so_far = PriorSoFar {
        counts,
        evidence: base
            .as_ref()
            .map_or(&[][..], |base| &base.metadata.prior.evidence[..]),
    };
    learn_prior(
        &mut model,
        &so_far,
        &corpus,
        &training_part,
        &is_held_out,
        by_sessions,
        &vectors,
    );
    // The floor is about the detector's scores: calibrate before the invariants join in.
    calibrate(
        &mut model,
        &corpus,
        &training_part,
        &is_held_out,
        by_sessions,
        &key,
        options,
    )?;
    if options.invariants {
        // An update mines over the bundle's sessions and its new ones together, going on with
        // the sessions its logs ended in; the replay sample's sessions are counted already.
        let earlier = match (&options.from, &base) {
            (Some(dir), Some(base))
                if base.metadata.training.session_key == model.metadata.training.session_key =>
            {
                read_session_tally(dir, base.metadata.templates.len())?
            }
            _ => SessionTally::default(),
        };
        let counted = (replay.is_some() && !earlier.is_empty()).then_some(0);
        // How long a session may pause: as the bundle learned it, where one is updated (a
        // session of its logs going on in the new ones after a gap nobody saw would measure
        // that gap).
        let max_gap = match &base {
            Some(base) if base.metadata.training.max_session_gap_secs > 0 => {
                base.metadata.training.max_session_gap_secs
            }
            _ => corpus.max_gap,
        };
        let tally = tally_sessions(&corpus, &earlier, counted, max_gap);
        model.metadata.invariants = mine_counts(&tally.counts, known, &MiningOptions::default());
        tracing::info!(
            invariants = model.metadata.invariants.len(),
            sessions = tally.counts.iter().map(|row| row.sessions).sum::<u64>(),
            open_sessions = tally.open.len(),
            "count invariants mined"
        );
        model.session_tally = tally.kept(options.replay);
    }
    model.metadata.training.duration_secs = started.elapsed().as_secs_f64();
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn a_long_log_trains_fewer_passes_and_at_least_one() {
        // Under the bound: every pass.
        assert_eq!(passes(40, 1_200, 1_000_000), 40);
        assert_eq!(passes(40, 25_000, 1_000_000), 40);
        // Over it: as many passes as it allows, never none.
        assert_eq!(passes(40, 100_000, 1_000_000), 10);
        assert_eq!(passes(40, 300_000, 1_000_000), 3);
        assert_eq!(passes(40, 900_000, 1_000_000), 1);
        assert_eq!(passes(40, 5_000_000, 1_000_000), 1);
        // No bound.
        assert_eq!(passes(40, 5_000_000, 0), 40);
    }
}

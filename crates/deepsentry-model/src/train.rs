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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use deepsentry_core::rng::SplitMix64;
use deepsentry_core::{Event, Origin};
use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;

use crate::autoencoder::TextAutoencoderConfig;
use crate::backend::{self, BackendKind};
use crate::bundle::{
    ClassPrior, LoadedModel, ModelMetadata, ModelSizes, TrainingSummary, FORMAT_VERSION,
    NORMALIZER_VERSION,
};
use crate::detector::{
    message_code, message_vector_width, window_input, DetectorKind, SequenceDetectorConfig,
};
use crate::features::hashed_features;
use crate::invariants::{mine, MiningOptions};
use crate::normalize::template_into;
use crate::novelty::{NoveltyStats, VocabularyLimits};
use crate::scorer::{
    Scorer, ScorerSettings, SequenceModel, SessionKey, SESSION_END_FIELD, SESSION_FIELD,
};
use crate::session_key::{find_session_key, SessionKeySpec};
use crate::severity::{level_of, severity_of, severity_with_level, Severity};
use deepsentry_core::lines::{read_all, LineDecoder, LineSettings, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::timestamp::yearless_clock;

/// Everything `deepsentry train` can set.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Files of normal logs.
    pub inputs: Vec<PathBuf>,
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
    /// The seed.
    pub const SEED: u64 = 42;
    /// Share of sessions held out to calibrate the threshold floor.
    pub const HOLDOUT: f64 = 0.1;
    /// How many times less likely than the 99th-percentile held-out session's least likely
    /// event an event must be to pass the threshold floor.
    pub const FLOOR_MARGIN: f64 = 200.0;
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            inputs: Vec::new(),
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
            seed: defaults::SEED,
            backend: BackendKind::default(),
            batch_size: 256,
            learning_rate: 3e-3,
            holdout: defaults::HOLDOUT,
            floor_margin: defaults::FLOOR_MARGIN,
            invariants: true,
            replay: true,
            progress: false,
            from: None,
            cancel: None,
        }
    }
}

/// A line of the training data.
struct Line {
    text: String,
    template: u32,
    session: u32,
    /// The line's own timestamp, if it leads with one.
    at: Option<i64>,
    /// How serious it is: its decoded level or its template's words, as the scorer reads it.
    severity: Severity,
}

/// The training data after normalization.
struct Corpus {
    lines: Vec<Line>,
    templates: Vec<String>,
    session_names: Vec<String>,
    /// Template ids of each session, in order.
    sessions: Vec<Vec<u32>>,
    max_gap: i64,
    origins: Vec<std::sync::Arc<Origin>>,
    line_origin: Vec<u16>,
}

/// Reads and normalizes the inputs; every line starts in its file's session (see
/// [`assign_sessions`]). `known` templates (those of a bundle being updated) keep their
/// places; the inputs' other templates follow.
fn read_corpus(options: &TrainOptions, known: &[String]) -> anyhow::Result<Corpus> {
    let mut templates: Vec<String> = known.to_vec();
    let mut template_ids: HashMap<String, u32> = known
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut lines = Vec::new();
    let mut origins = Vec::new();
    let mut line_origin = Vec::new();
    let mut scratch = String::new();
    let metrics = deepsentry_core::metrics::Metrics::default();
    let clock = yearless_clock();
    for (file_index, path) in options.inputs.iter().enumerate() {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open training input {}", path.display()))?;
        let stream = path.display().to_string();
        let origin = Origin::new("train", stream.as_str());
        origins.push(origin.clone());
        let mut decoder =
            LineDecoder::new(origin, &metrics.component("train"), &options.lines).with_clock(clock);
        read_all(file, &mut decoder, |event| {
            let text = event.message();
            if text.is_empty() {
                return;
            }
            template_into(text, &mut scratch);
            let template = match template_ids.get(scratch.as_str()) {
                Some(&id) => id,
                None => {
                    let id = templates.len() as u32;
                    template_ids.insert(scratch.clone(), id);
                    templates.push(scratch.clone());
                    id
                }
            };
            // Dated at the clock: the event has no time of its own.
            let at = (event.timestamp != clock).then(|| event.timestamp.timestamp());
            let severity = match level_of(&event, None) {
                Some(level) => severity_with_level(&scratch, &level.to_string()),
                None => severity_of(&scratch),
            };
            lines.push(Line {
                text: text.to_owned(),
                template,
                session: 0,
                at,
                severity,
            });
            line_origin.push(file_index as u16);
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    }
    anyhow::ensure!(!lines.is_empty(), "the training inputs hold no lines");
    let mut corpus = Corpus {
        lines,
        templates,
        session_names: Vec::new(),
        sessions: Vec::new(),
        max_gap: 0,
        origins,
        line_origin,
    };
    assign_sessions(&mut corpus, &SessionKey::Stream);
    Ok(corpus)
}

/// Most lines a bundle keeps as its replay sample.
pub const REPLAY_LINES: usize = 2000;

/// The replay sample a bundle keeps: the last lines of each input, an equal share each, so
/// sequences stay whole and, after updates, the old logs' share shrinks but never vanishes.
fn replay_sample(corpus: &Corpus) -> Vec<String> {
    let files = corpus.origins.len().max(1);
    let share = REPLAY_LINES / files;
    let mut sample = Vec::new();
    for file in 0..files {
        let lines: Vec<&str> = corpus
            .lines
            .iter()
            .zip(&corpus.line_origin)
            .filter(|(_, &origin)| usize::from(origin) == file)
            .map(|(line, _)| line.text.as_str())
            .collect();
        let from = lines.len().saturating_sub(share);
        sample.extend(lines[from..].iter().map(|l| l.to_string()));
    }
    sample
}

/// Groups the corpus's lines into sessions by `key` (lines it does not name stay in their
/// file's session), and measures the longest pause inside a session.
fn assign_sessions(corpus: &mut Corpus, key: &SessionKey) {
    let mut session_ids: HashMap<String, u32> = HashMap::new();
    let mut last_seen: Vec<i64> = Vec::new();
    corpus.session_names.clear();
    corpus.sessions.clear();
    corpus.max_gap = 0;
    for (line, &file) in corpus.lines.iter_mut().zip(&corpus.line_origin) {
        let stream = || corpus.origins[usize::from(file)].stream.to_string();
        let name = match key {
            SessionKey::Regex(re) => re
                .captures(&line.text)
                .and_then(|c| c.get(1).or_else(|| c.get(0)))
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(stream),
            _ => stream(),
        };
        let next_id = session_ids.len() as u32;
        let session = *session_ids.entry(name.clone()).or_insert_with(|| {
            corpus.session_names.push(name);
            corpus.sessions.push(Vec::new());
            last_seen.push(i64::MIN);
            next_id
        });
        corpus.sessions[session as usize].push(line.template);
        line.session = session;
        if let Some(at) = line.at {
            let last = &mut last_seen[session as usize];
            if *last != i64::MIN {
                corpus.max_gap = corpus.max_gap.max(at - *last);
            }
            *last = at;
        }
    }
}

/// Resolves the session key of `options`; with `auto`, looks for one in the corpus and logs
/// what it tried. Returns the key and, when it was found, the name of its shape.
fn resolve_session_key(
    options: &TrainOptions,
    corpus: &Corpus,
) -> anyhow::Result<(SessionKey, Option<String>)> {
    match &options.session_key {
        SessionKeySpec::Regex(pattern) => Ok((
            SessionKey::Regex(
                Regex::new(pattern)
                    .with_context(|| format!("bad --session-key regex `{pattern}`"))?,
            ),
            None,
        )),
        SessionKeySpec::Stream => Ok((SessionKey::Stream, None)),
        SessionKeySpec::Auto => {
            let view: Vec<(&str, u32, u16)> = corpus
                .lines
                .iter()
                .zip(&corpus.line_origin)
                .map(|(l, &f)| (l.text.as_str(), l.template, f))
                .collect();
            let finding = find_session_key(&view);
            for tried in finding.tried.iter().take(5) {
                tracing::debug!(
                    key = tried.candidate.as_ref().map_or("-", |c| c.name.as_str()),
                    nats_per_line = format!("{:.3}", tried.nats_per_line),
                    coverage = format!("{:.3}", tried.coverage),
                    sessions = tried.sessions,
                    session_given_template = format!("{:.3}", tried.session_given_template),
                    interleaving = format!("{:.3}", tried.interleaving),
                    "session key candidate"
                );
            }
            match finding.chosen {
                Some(candidate) => {
                    let nats = finding
                        .tried
                        .iter()
                        .find(|t| t.candidate.as_ref() == Some(&candidate))
                        .map_or(f64::NAN, |t| t.nats_per_line);
                    tracing::info!(
                        key = candidate.name,
                        pattern = candidate.pattern,
                        nats_per_line = format!("{nats:.3}"),
                        stream_nats_per_line = format!("{:.3}", finding.stream.nats_per_line),
                        "session key found"
                    );
                    Ok((
                        SessionKey::Regex(Regex::new(&candidate.pattern)?),
                        Some(candidate.name),
                    ))
                }
                None => {
                    tracing::info!(
                        stream_nats_per_line = format!("{:.3}", finding.stream.nats_per_line),
                        "no session key makes the next line more predictable; one session per input"
                    );
                    Ok((SessionKey::Stream, None))
                }
            }
        }
    }
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

/// The sessions that cannot have been cut by the start or the end of an input file: those
/// without a line in the first or last 1 % of their file's lines. A log file that starts or
/// stops in the middle of sessions would otherwise break every count invariant.
fn sessions_inside_inputs(corpus: &Corpus) -> Vec<&[u32]> {
    let mut bounds = vec![(usize::MAX, 0usize); corpus.origins.len()];
    for (i, &file) in corpus.line_origin.iter().enumerate() {
        let (first, last) = &mut bounds[usize::from(file)];
        *first = (*first).min(i);
        *last = (*last).max(i);
    }
    let mut cut = vec![false; corpus.sessions.len()];
    for (i, (line, &file)) in corpus.lines.iter().zip(&corpus.line_origin).enumerate() {
        let (first, last) = bounds[usize::from(file)];
        let edge = (last - first + 1) / 100;
        if i < first + edge || i + edge > last {
            cut[line.session as usize] = true;
        }
    }
    corpus
        .sessions
        .iter()
        .zip(&cut)
        .filter(|(_, cut)| !**cut)
        .map(|(session, _)| session.as_slice())
        .collect()
}

/// Each session's events that come before the last `share` of its file's lines: what a
/// model trained on one stream learns from, the rest being what it meets next.
fn before_tail(corpus: &Corpus, share: f64) -> Vec<&[u32]> {
    let mut file_lines = vec![0usize; corpus.origins.len()];
    for &file in &corpus.line_origin {
        file_lines[usize::from(file)] += 1;
    }
    let tail_start: Vec<usize> = file_lines
        .iter()
        .map(|&n| n - (n as f64 * share) as usize)
        .collect();
    let mut position = vec![0usize; corpus.origins.len()];
    let mut keep = vec![0usize; corpus.sessions.len()];
    for (line, &file) in corpus.lines.iter().zip(&corpus.line_origin) {
        let at = &mut position[usize::from(file)];
        if *at < tail_start[usize::from(file)] {
            keep[line.session as usize] += 1;
        }
        *at += 1;
    }
    corpus
        .sessions
        .iter()
        .zip(keep)
        .map(|(session, keep)| &session[..keep])
        .collect()
}

/// Whether session `index` is held out (a stable hash of its name and the seed).
fn held_out(name: &str, seed: u64, share: f64) -> bool {
    let h = deepsentry_core::hash::fnv1a(name.as_bytes(), seed);
    (h % 10_000) as f64 / 10_000.0 < share
}

/// Trains a model; see the module docs. Logs a summary at the end.
pub fn train(options: &TrainOptions) -> anyhow::Result<LoadedModel> {
    let started = Instant::now();
    anyhow::ensure!(!options.inputs.is_empty(), "no training input given");
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
    let options = match replay {
        Some(path) => {
            with_replay = TrainOptions {
                inputs: std::iter::once(path)
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
    let is_held_out: Vec<bool> = corpus
        .session_names
        .iter()
        .map(|n| by_sessions && held_out(n, options.seed, options.holdout))
        .collect();
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
    let bar = progress_bar(
        options.progress,
        (options.epochs * batches_per_epoch) as u64,
        "detector",
    );
    let mut detector_loss = 0.0;
    for _epoch in 0..options.epochs {
        rng.shuffle(&mut samples);
        let mut epoch_loss = 0.0;
        for chunk in samples.chunks(options.batch_size) {
            let windows: Vec<Vec<&[f32]>> = chunk
                .iter()
                .map(|&(s, i, _)| {
                    let session = &corpus.sessions[s as usize];
                    let i = i as usize;
                    session[i.saturating_sub(steps)..i]
                        .iter()
                        .map(|&t| vectors[t as usize].as_slice())
                        .collect()
                })
                .collect();
            let input = window_input(&windows, steps, sizes.embedding_size, known, &train_device);
            let targets: Vec<i64> = chunk.iter().map(|&(_, _, t)| i64::from(t)).collect();
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
        novelty: NoveltyStats::learn(
            &corpus
                .lines
                .iter()
                .map(|l| (l.template, l.severity))
                .collect::<Vec<_>>(),
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
            epochs: options.epochs,
            seed: options.seed,
            autoencoder_loss: ae_loss,
            detector_loss,
            reconstruction_scale,
            max_session_gap_secs: corpus.max_gap,
            learned_session_ends: by_sessions,
            updated_from: options.from.as_ref().map(|d| d.display().to_string()),
            earlier_lines: base.as_ref().map_or(0, |b| {
                b.metadata.training.lines + b.metadata.training.earlier_lines
            }),
            ..TrainingSummary::default()
        },
    };
    // What the bundle being updated learned of how often each class comes, as counts.
    let carried: Vec<f64> = match &base {
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
    learn_prior(
        &mut model,
        &carried,
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
        model.metadata.invariants = mine(
            &sessions_inside_inputs(&corpus),
            known,
            &MiningOptions::default(),
        );
        tracing::info!(
            invariants = model.metadata.invariants.len(),
            "count invariants mined"
        );
    }
    model.metadata.training.duration_secs = started.elapsed().as_secs_f64();
    Ok(model)
}

/// How many times less likely than the 99th percentile of held-out lines an event must be to
/// pass the floor of a model trained on one stream (no sessions).
const LINE_FLOOR_MARGIN: f64 = 10.0;

/// Mixture weights tried for the class prior (see [`ClassPrior`]).
const PRIOR_WEIGHTS: [f64; 11] = [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5];

/// Sets the class prior: how often each class came (over all training targets, smoothed,
/// plus the `carried` counts of a bundle being updated), and its weight, the one of
/// [`PRIOR_WEIGHTS`] under which the held-out events are most likely.
fn learn_prior(
    model: &mut LoadedModel,
    carried: &[f64],
    corpus: &Corpus,
    training_part: &[&[u32]],
    is_held_out: &[bool],
    by_sessions: bool,
    vectors: &[Vec<f32>],
) {
    let classes = model.metadata.classes();
    let end = model.metadata.templates.len();
    let mut counts = vec![0.5f64; classes];
    for (count, earlier) in counts.iter_mut().zip(carried) {
        *count += earlier;
    }
    // (session, position, target) of every held-out event.
    let mut held: Vec<(usize, usize, usize)> = Vec::new();
    for (s, session) in corpus.sessions.iter().enumerate() {
        for &t in session.iter() {
            counts[t as usize] += 1.0;
        }
        counts[end] += 1.0;
        let first = if by_sessions {
            if !is_held_out[s] {
                continue;
            }
            0
        } else {
            training_part[s].len()
        };
        for (i, &t) in session.iter().enumerate().skip(first) {
            held.push((s, i, t as usize));
        }
        if by_sessions {
            held.push((s, session.len(), end));
        }
    }
    let total: f64 = counts.iter().sum();
    model.metadata.prior = ClassPrior {
        weight: 0.0,
        probabilities: counts.iter().map(|c| (c / total) as f32).collect(),
    };
    if held.is_empty() {
        return;
    }
    // Held-out events are many; a sample of them decides as well.
    let step = held.len().div_ceil(20_000);
    let steps = model.metadata.sizes.sequence_length;
    let mut likelihood = [0.0f64; PRIOR_WEIGHTS.len()];
    for chunk in held.iter().step_by(step).collect::<Vec<_>>().chunks(512) {
        let windows: Vec<Vec<&[f32]>> = chunk
            .iter()
            .map(|&&(s, i, _)| {
                corpus.sessions[s][i.saturating_sub(steps)..i]
                    .iter()
                    .map(|&t| vectors[t as usize].as_slice())
                    .collect()
            })
            .collect();
        let rows = model.log_probs(&windows);
        for (&&(_, _, target), row) in chunk.iter().zip(rows) {
            let detector = f64::from(row[target]).exp();
            let prior = f64::from(model.metadata.prior.probabilities[target]);
            for (l, w) in likelihood.iter_mut().zip(PRIOR_WEIGHTS) {
                *l += ((1.0 - w) * detector + w * prior).max(1e-30).ln();
            }
        }
    }
    let best = (0..PRIOR_WEIGHTS.len())
        .max_by(|&a, &b| likelihood[a].total_cmp(&likelihood[b]))
        .unwrap_or(0);
    model.metadata.prior.weight = PRIOR_WEIGHTS[best];
    let events = held.len().div_ceil(step) as f64;
    tracing::info!(
        weight = PRIOR_WEIGHTS[best],
        held_out_nats_per_event = format!("{:.3}", -likelihood[best] / events),
        detector_alone = format!("{:.3}", -likelihood[0] / events),
        "class prior mixed into the detector's predictions"
    );
}

/// Scores the held-out sessions with the pipeline's own scorer and sets the floor.
fn calibrate(
    model: &mut LoadedModel,
    corpus: &Corpus,
    training_part: &[&[u32]],
    is_held_out: &[bool],
    by_sessions: bool,
    key: &SessionKey,
    options: &TrainOptions,
) -> anyhow::Result<()> {
    let use_all = by_sessions && !is_held_out.iter().any(|h| *h);
    // Without sessions to hold out, the tail of each stream is the held-out part.
    let mut position = vec![0usize; corpus.sessions.len()];
    let settings = ScorerSettings {
        window_size: 100,
        threshold_multiplier: 2.5,
        min_samples: usize::MAX,
        exclude_anomalies: false,
        threshold_floor: Some(f64::INFINITY),
        session_key: key.clone(),
        session_ttl_secs: i64::MAX / 4,
        max_sessions: usize::MAX,
        alert_group_secs: 0,
        vocabulary: VocabularyLimits::default(),
        novelty_floor: f64::INFINITY,
        ..ScorerSettings::default()
    };
    let mut scorer = Scorer::new(&*model, settings);
    let mut session_max: HashMap<String, f64> = HashMap::new();
    let mut scores = Vec::new();
    let mut record = |events: Vec<Event>| {
        for event in events {
            let Some(deepsentry_core::Value::Float(score)) = event
                .fields
                .get(deepsentry_core::event::keys::ANOMALY_SCORE)
                .cloned()
            else {
                continue;
            };
            let session = event
                .fields
                .get(SESSION_FIELD)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let is_end = event.fields.get(SESSION_END_FIELD).is_some();
            if is_end && !by_sessions {
                // The stream was cut for the hold-out; it did not end there.
                continue;
            }
            scores.push(score);
            // One stream is judged line by line: each line is its own unit.
            let unit = if by_sessions {
                session
            } else {
                scores.len().to_string()
            };
            let max = session_max.entry(unit).or_insert(0.0);
            *max = max.max(score);
        }
    };
    let now = chrono::Utc::now();
    let mut batch = Vec::new();
    for (line, &origin) in corpus.lines.iter().zip(&corpus.line_origin) {
        let session = line.session as usize;
        let at = position[session];
        position[session] += 1;
        let held = if by_sessions {
            is_held_out[session]
        } else {
            at >= training_part[session].len()
        };
        if !use_all && !held {
            continue;
        }
        batch.push(Event::from_str(
            &line.text,
            now,
            corpus.origins[origin as usize].clone(),
        ));
        if batch.len() == 1024 {
            record(scorer.process(std::mem::take(&mut batch)));
        }
    }
    record(scorer.process(batch));
    record(scorer.finish());
    anyhow::ensure!(!scores.is_empty(), "nothing to calibrate on");
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = session_max.values().copied().fold(0.0, f64::max);
    let mut sorted: Vec<f64> = session_max.values().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let quantile = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let training = &mut model.metadata.training;
    training.score_mean = mean;
    training.score_std = std;
    training.score_max = max;
    training.score_p99 = quantile(0.99);
    // The 99th percentile, not the maximum: one odd session in the hold-out would otherwise
    // decide the floor alone. The margin is in probability, so it adds in nats.
    training.score_floor = if by_sessions {
        training.score_p99 + options.floor_margin.max(1.0).ln()
    } else {
        // One stream is judged line by line: the 99th percentile of held-out lines is a far
        // larger sample than that of sessions' maxima, so a smaller margin says as much.
        training.score_p99 + LINE_FLOOR_MARGIN.ln()
    };
    tracing::info!(
        sessions = sorted.len(),
        score_mean = format!("{mean:.3}"),
        session_max_p50 = format!("{:.3}", quantile(0.5)),
        session_max_p99 = format!("{:.3}", quantile(0.99)),
        session_max_max = format!("{max:.3}"),
        floor = format!("{:.3}", training.score_floor),
        by_sessions,
        "threshold floor calibrated on held-out sessions (or lines)"
    );
    Ok(())
}

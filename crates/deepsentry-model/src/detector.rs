//! The sequence anomaly detector: a network over the vectors of a session's previous events
//! (autoencoder embedding + template identity) that predicts which template comes next
//! (DeepLog's idea, on learned embeddings). Its classes are the training templates, then "the
//! session ends", then "a template never seen".
//!
//! Two networks read the same windows. The window network (the default) lays the window's
//! steps side by side and runs two ReLU layers over them. Its first layer is a sum over
//! positions, each position's part a function of that step's message alone, so scoring a
//! window costs one row per step, what that message adds at that position (computed once per
//! message and kept), and two small layers: no step-by-step recurrence. Several such
//! networks, trained side by side from different initializations, form the detector; their
//! predictions are averaged (see [`WindowEnsemble`]). The GRU reads the steps one after the
//! other; bundles trained before the window network keep it.

use burn::module::Param;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{GateController, Gru, GruConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use serde::{Deserialize, Serialize};

/// Which network a detector is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// A GRU over the window's steps (what bundles without a `detector` entry hold).
    Gru,
    /// Two ReLU layers over the window's steps side by side (see the module docs).
    #[default]
    Window,
}

impl DetectorKind {
    /// The kind of a bundle that does not say (it predates the window network).
    pub fn unspecified() -> Self {
        Self::Gru
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "window" => Ok(Self::Window),
            "gru" => Ok(Self::Gru),
            other => Err(format!(
                "unknown detector `{other}`; valid detectors: window, gru"
            )),
        }
    }
}

/// Sizes of the sequence detector.
#[derive(Debug, Clone)]
pub struct SequenceDetectorConfig {
    /// Which network.
    pub kind: DetectorKind,
    /// Width of one step of input: a message's vector (see [`message_vector_width`]) plus one
    /// padding flag.
    pub input: usize,
    /// Steps per window.
    pub steps: usize,
    /// GRU state size, or the width of each of the window network's layers.
    pub hidden: usize,
    /// Number of output classes.
    pub classes: usize,
    /// Window networks averaged (ignored by a GRU).
    pub members: usize,
}

/// GRU + linear head.
#[derive(Module, Debug)]
pub struct GruDetector {
    gru: Gru,
    head: Linear,
    hidden: usize,
}

/// The window network: `head(relu(second(relu(first(steps side by side)))))`.
#[derive(Module, Debug)]
pub struct WindowDetector {
    first: Linear,
    second: Linear,
    head: Linear,
    steps: usize,
    input: usize,
    hidden: usize,
}

/// Window networks trained side by side from different initializations, whose predicted
/// distributions are averaged (a mixture). Where one network is overconfident about a rare
/// but normal order, the others vote it down, so the scores, and the floor learned from
/// them, move less from one training seed to the next.
#[derive(Module, Debug)]
pub struct WindowEnsemble {
    members: Vec<WindowDetector>,
}

/// A sequence detector of either kind.
// One per loaded model, never in a collection: the GRU's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum SequenceDetector {
    /// See [`GruDetector`].
    Gru(GruDetector),
    /// See [`WindowEnsemble`].
    Window(WindowEnsemble),
}

impl SequenceDetectorConfig {
    /// A freshly initialized detector on `device`.
    pub fn init(&self, device: &Device) -> SequenceDetector {
        match self.kind {
            DetectorKind::Gru => SequenceDetector::Gru(self.init_gru(device)),
            DetectorKind::Window => SequenceDetector::Window(WindowEnsemble {
                members: (0..self.members.max(1))
                    .map(|_| WindowDetector {
                        first: LinearConfig::new(self.steps * self.input, self.hidden).init(device),
                        second: LinearConfig::new(self.hidden, self.hidden).init(device),
                        head: LinearConfig::new(self.hidden, self.classes).init(device),
                        steps: self.steps,
                        input: self.input,
                        hidden: self.hidden,
                    })
                    .collect(),
            }),
        }
    }

    /// A freshly initialized GRU detector (whatever `kind` says): the record type of bundles
    /// that hold one.
    pub fn init_gru(&self, device: &Device) -> GruDetector {
        GruDetector {
            gru: GruConfig::new(self.input, self.hidden, true).init(device),
            head: LinearConfig::new(self.hidden, self.classes).init(device),
            hidden: self.hidden,
        }
    }
}

impl SequenceDetector {
    /// Which network this is.
    pub fn kind(&self) -> DetectorKind {
        match self {
            Self::Gru(_) => DetectorKind::Gru,
            Self::Window(_) => DetectorKind::Window,
        }
    }

    /// Windows `[batch, steps, input]` -> next-template log-probabilities `[batch, classes]`
    /// (for an ensemble, the log of the averaged distribution).
    pub fn forward(&self, windows: Tensor<3>) -> Tensor<2> {
        match self {
            Self::Gru(gru) => log_softmax(gru.forward(windows), 1),
            Self::Window(ensemble) => mixture(
                ensemble
                    .members
                    .iter()
                    .map(|member| log_softmax(member.forward(windows.clone()), 1))
                    .collect(),
            ),
        }
    }

    /// The training loss on windows and their next classes: the cross-entropy of the GRU, or
    /// the sum of the window networks' own cross-entropies (each learns on its own; the
    /// average is taken when scoring). Divide by [`SequenceDetector::members`] for a mean.
    pub fn loss(&self, windows: Tensor<3>, targets: Tensor<1, Int>) -> Tensor<1> {
        let cross_entropy = CrossEntropyLossConfig::new().init(&windows.device());
        match self {
            Self::Gru(gru) => cross_entropy.forward(gru.forward(windows), targets),
            Self::Window(ensemble) => ensemble
                .members
                .iter()
                .map(|member| {
                    cross_entropy.forward(member.forward(windows.clone()), targets.clone())
                })
                .reduce(|a, b| a + b)
                .expect("an ensemble has members"),
        }
    }

    /// How many networks the detector averages.
    pub fn members(&self) -> usize {
        match self {
            Self::Gru(_) => 1,
            Self::Window(ensemble) => ensemble.members.len(),
        }
    }

    /// The same detector for `added` more templates, appended after the `templates` it knows
    /// (`train --from`): the one-hot part of its input grows by `added` columns after the
    /// `embedding` ones, with zero weights, so every known window reads exactly as before;
    /// the head gains `added` classes before "end" and "unseen", with zero weights and the
    /// known templates' mean bias, so a new template starts as likely anywhere as an average
    /// one until fine-tuning says where it comes.
    pub fn grow(self, embedding: usize, templates: usize, added: usize) -> Self {
        if added == 0 {
            return self;
        }
        let at = embedding + templates;
        match self {
            Self::Gru(mut detector) => {
                let widen = |mut gate: GateController| {
                    let weight = gate.input_transform.weight.val();
                    gate.input_transform.weight =
                        Param::from_tensor(insert(weight, 0, at, added, 0.0));
                    gate
                };
                detector.gru.update_gate = widen(detector.gru.update_gate);
                detector.gru.reset_gate = widen(detector.gru.reset_gate);
                detector.gru.new_gate = widen(detector.gru.new_gate);
                detector.head = grow_head(detector.head, templates, added);
                Self::Gru(detector)
            }
            Self::Window(ensemble) => Self::Window(WindowEnsemble {
                members: ensemble
                    .members
                    .into_iter()
                    .map(|mut member| {
                        // Each step's block of the first layer's rows widens at the same
                        // place; from the last step back, so the earlier blocks' offsets
                        // still hold.
                        let mut weight = member.first.weight.val();
                        for step in (0..member.steps).rev() {
                            weight = insert(weight, 0, step * member.input + at, added, 0.0);
                        }
                        member.first.weight = Param::from_tensor(weight);
                        member.input += added;
                        member.head = grow_head(member.head, templates, added);
                        member
                    })
                    .collect(),
            }),
        }
    }
}

/// The log of the average of distributions given as log-probabilities `[batch, classes]`.
fn mixture(mut log_probs: Vec<Tensor<2>>) -> Tensor<2> {
    if log_probs.len() == 1 {
        return log_probs.pop().expect("one member");
    }
    let members = log_probs.len();
    let stacked: Tensor<3> = Tensor::stack(log_probs, 0);
    let max = stacked.clone().max_dim(0);
    let sum = (stacked - max.clone()).exp().sum_dim(0);
    (sum.log() + max).squeeze_dim::<2>(0) - (members as f32).ln()
}

/// Inserts `added` copies of `fill` at `at` along `dim` of a parameter.
fn insert<const D: usize>(
    value: Tensor<D>,
    dim: usize,
    at: usize,
    added: usize,
    fill: f32,
) -> Tensor<D> {
    let mut shape = value.dims();
    let len = shape[dim];
    shape[dim] = added;
    let device = value.device();
    let before = value.clone().narrow(dim, 0, at);
    let after = value.narrow(dim, at, len - at);
    let middle = Tensor::<D>::full(shape, fill, &device);
    Tensor::cat(vec![before, middle, after], dim)
}

/// The head for `added` more templates after the `templates` it knows (see
/// [`SequenceDetector::grow`]).
fn grow_head(mut head: Linear, templates: usize, added: usize) -> Linear {
    head.weight = Param::from_tensor(insert(head.weight.val(), 1, templates, added, 0.0));
    if let Some(bias) = head.bias.take() {
        let bias = bias.val();
        let mean = bias
            .clone()
            .narrow(0, 0, templates)
            .mean()
            .into_scalar::<f32>();
        head.bias = Some(Param::from_tensor(insert(bias, 0, templates, added, mean)));
    }
    head
}

impl GruDetector {
    /// Windows `[batch, steps, input]` -> next-template logits `[batch, classes]`.
    pub fn forward(&self, windows: Tensor<3>) -> Tensor<2> {
        let states = self.gru.forward(windows, None);
        let [batch, steps, _] = states.dims();
        let last: Tensor<2> = states
            .slice(s![.., steps - 1, ..])
            .reshape([batch, self.hidden]);
        self.head.forward(last)
    }
}

impl WindowDetector {
    /// Windows `[batch, steps, input]` -> next-template logits `[batch, classes]`.
    pub fn forward(&self, windows: Tensor<3>) -> Tensor<2> {
        let [batch, steps, input] = windows.dims();
        let flat = windows.reshape([batch, steps * input]);
        self.layers_after_first(self.first.forward(flat))
    }

    fn layers_after_first(&self, first: Tensor<2>) -> Tensor<2> {
        self.head.forward(relu(self.second.forward(relu(first))))
    }
}

/// The window networks' first layers split by what each step brings (see the module docs):
/// per network, a table with one row per (step, input) and per (step, padding), and, per
/// message code met, what that code adds at each step (its embedding times the step's rows),
/// computed once.
#[derive(Debug)]
pub struct WindowTables {
    members: Vec<MemberTables>,
    embedding: usize,
    /// Per message code (by its address): the code and its [`CodeRows`].
    codes: std::sync::Mutex<KnownCodes>,
}

/// Message codes met, by address: each code and its [`CodeRows`].
type KnownCodes = foldhash::HashMap<u64, (Box<[f32]>, CodeRows)>;

/// What one message code (embedding and identity) adds to the first layer: for each network
/// and step, `hidden` values (`members * steps * hidden`, network-major).
type CodeRows = std::sync::Arc<[f32]>;

/// Most message codes whose rows are kept (each `members * steps * hidden` floats, 15 KiB
/// for three networks of 128 over 10 steps); past it the table starts over. A model has a
/// code per template, training's and those learned online.
const MAX_CACHED_CODES: usize = 512;

/// The key of a padding step's rows among the codes' (no allocation has address 0).
const PADDING: u64 = 0;

impl Clone for WindowTables {
    fn clone(&self) -> Self {
        Self {
            members: self.members.clone(),
            embedding: self.embedding,
            codes: Default::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct MemberTables {
    /// `[steps * input, hidden]`, row-major, in memory: the first layer's rows, from which
    /// each message code's [`CodeRows`] are made.
    rows: Vec<f32>,
    /// The first layer's bias (zero without one).
    bias: Vec<f32>,
}

impl WindowTables {
    /// The tables of `ensemble`, whose message codes hold `embedding` embedding values.
    pub fn new(ensemble: &WindowEnsemble, embedding: usize) -> Self {
        let members = ensemble
            .members
            .iter()
            .map(|member| {
                let weight = member.first.weight.val();
                let [_, hidden] = weight.dims();
                MemberTables {
                    rows: weight
                        .into_data()
                        .try_into_vec::<f32>()
                        .expect("weights are f32"),
                    bias: match &member.first.bias {
                        Some(bias) => bias
                            .val()
                            .into_data()
                            .try_into_vec::<f32>()
                            .expect("weights are f32"),
                        None => vec![0.0; hidden],
                    },
                }
            })
            .collect();
        Self {
            members,
            embedding,
            codes: Default::default(),
        }
    }

    /// What a step holding `code` adds to each network's first layer at each step: its
    /// embedding times the step's embedding rows, plus the step's row for its identity; for a
    /// padding step (`code` is `None`), the step's padding row.
    fn code_rows(
        &self,
        code: Option<&[f32]>,
        steps: usize,
        input: usize,
        hidden: usize,
    ) -> CodeRows {
        let mut rows = vec![0.0f32; self.members.len() * steps * hidden];
        for (member, out) in self.members.iter().zip(rows.chunks_mut(steps * hidden)) {
            for (step, out) in out.chunks_mut(hidden).enumerate() {
                let mut add = |row: usize, times: f32| {
                    let at = (step * input + row) * hidden;
                    for (o, w) in out.iter_mut().zip(&member.rows[at..at + hidden]) {
                        *o += times * w;
                    }
                };
                let Some(code) = code else {
                    add(input - 1, 1.0);
                    continue;
                };
                for (e, &c) in code[..self.embedding].iter().enumerate() {
                    add(e, c);
                }
                if let Some(class) = code_class(code, self.embedding) {
                    add(self.embedding + class, 1.0);
                }
            }
        }
        rows.into()
    }

    /// Log-probabilities `[windows, classes]`, the same as [`SequenceDetector::forward`] on
    /// [`window_input`]'s layout of these windows (message codes as [`message_code`] makes
    /// them, up to `steps` each, oldest first).
    pub fn log_probs<W: AsRef<[f32]>>(
        &self,
        ensemble: &WindowEnsemble,
        windows: &[Vec<W>],
        device: &Device,
    ) -> Tensor<2> {
        let Some(shape) = ensemble.members.first() else {
            unreachable!("an ensemble has members")
        };
        let (steps, input, hidden, embedding) =
            (shape.steps, shape.input, shape.hidden, self.embedding);
        let batch = windows.len();
        // Per window and step, what the step adds to the first layers (see `code_rows`).
        let mut steps_rows: Vec<CodeRows> = Vec::with_capacity(batch * steps);
        {
            let mut known = self
                .codes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.len() > MAX_CACHED_CODES {
                known.clear();
            }
            let padding = match known.get(&PADDING) {
                Some((_, rows)) => rows.clone(),
                None => {
                    let rows = self.code_rows(None, steps, input, hidden);
                    known.insert(PADDING, (Box::default(), rows.clone()));
                    rows
                }
            };
            for window in windows {
                let window = &window[window.len().saturating_sub(steps)..];
                let pad = steps - window.len();
                steps_rows.extend(std::iter::repeat_n(&padding, pad).cloned());
                for code in window {
                    let code = &code.as_ref()[..=embedding];
                    // A message's code is one allocation, shared by every window that holds
                    // it: its address finds it, and the comparison makes sure.
                    let key = code.as_ptr() as u64;
                    let rows = match known.get(&key) {
                        Some((seen, rows)) if **seen == *code => rows.clone(),
                        _ => {
                            let rows = self.code_rows(Some(code), steps, input, hidden);
                            known.insert(key, (code.into(), rows.clone()));
                            rows
                        }
                    };
                    steps_rows.push(rows);
                }
            }
        }
        mixture(
            ensemble
                .members
                .iter()
                .zip(&self.members)
                .enumerate()
                .map(|(m, (member, tables))| {
                    let mut sums = Vec::with_capacity(batch * hidden);
                    for window in steps_rows.chunks(steps) {
                        let at = sums.len();
                        sums.extend_from_slice(&tables.bias);
                        let out = &mut sums[at..at + hidden];
                        for (step, rows) in window.iter().enumerate() {
                            let at = (m * steps + step) * hidden;
                            for (o, w) in out.iter_mut().zip(&rows[at..at + hidden]) {
                                *o += w;
                            }
                        }
                    }
                    let first =
                        Tensor::<2>::from_data(TensorData::new(sums, [batch, hidden]), device);
                    log_softmax(member.layers_after_first(first), 1)
                })
                .collect(),
        )
    }
}

/// Width of the vector the detector reads per message: the embedding, then one column per
/// training template.
pub fn message_vector_width(embedding: usize, templates: usize) -> usize {
    embedding + templates
}

/// How the detector sees one message, compactly: the autoencoder's embedding of its template,
/// then its class plus one (0: a template never seen in training). [`window_input`] expands
/// the class into the template's identity, one-hot over the training templates. The
/// embedding lets similar messages share what was learned; the identity keeps templates
/// whose words overlap (`added to invalidSet` and `added to blockMap`) apart, so a rare but
/// exact order in training is learned sharply. Classes are exact in an `f32` up to 2^24.
pub fn message_code(embedding: &[f32], class: Option<usize>) -> Vec<f32> {
    let mut code = Vec::with_capacity(embedding.len() + 1);
    code.extend_from_slice(embedding);
    code.push(class.map_or(0.0, |c| (c + 1) as f32));
    code
}

/// The class a [`message_code`] holds.
fn code_class(code: &[f32], embedding: usize) -> Option<usize> {
    match code.get(embedding) {
        Some(&c) if c >= 1.0 => Some(c as usize - 1),
        _ => None,
    }
}

/// Lays out windows for [`SequenceDetector::forward`]: each window (up to `steps` message
/// codes, oldest first) is left-padded to `steps`; a real step is `[embedding, one-hot over
/// the templates, 0]`, a padding step `[0, ..., 0, 1]`, so the detector knows where a session
/// starts. A class at or past `templates` reads as no identity.
pub fn window_input<W: AsRef<[f32]>>(
    windows: &[Vec<W>],
    steps: usize,
    embedding: usize,
    templates: usize,
    device: &Device,
) -> Tensor<3> {
    let vector_width = message_vector_width(embedding, templates);
    let width = vector_width + 1;
    let mut data = vec![0.0f32; windows.len() * steps * width];
    for (b, window) in windows.iter().enumerate() {
        let window = &window[window.len().saturating_sub(steps)..];
        let pad = steps - window.len();
        for t in 0..steps {
            let row = &mut data[(b * steps + t) * width..(b * steps + t + 1) * width];
            if t < pad {
                row[vector_width] = 1.0;
            } else {
                let code = window[t - pad].as_ref();
                row[..embedding].copy_from_slice(&code[..embedding]);
                if let Some(class) = code_class(code, embedding).filter(|&c| c < templates) {
                    row[embedding + class] = 1.0;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [windows.len(), steps, width]), device)
}

#[cfg(test)]
mod tests;

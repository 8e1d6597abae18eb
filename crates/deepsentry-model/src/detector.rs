//! The sequence anomaly detector: a GRU over the vectors of a session's previous events
//! (autoencoder embedding + template identity) that predicts which template comes next
//! (DeepLog's idea, on learned embeddings). Its
//! classes are the training templates, then "the session ends", then "a template never seen".

use burn::module::Param;
use burn::nn::{GateController, Gru, GruConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Sizes of the sequence detector.
#[derive(Config, Debug)]
pub struct SequenceDetectorConfig {
    /// Width of one step of input: a message's vector (see [`message_vector`]) plus one
    /// padding flag.
    pub input: usize,
    /// GRU state size.
    pub hidden: usize,
    /// Number of output classes.
    pub classes: usize,
}

/// GRU + linear head.
#[derive(Module, Debug)]
pub struct SequenceDetector {
    gru: Gru,
    head: Linear,
    hidden: usize,
}

impl SequenceDetectorConfig {
    /// A freshly initialized detector on `device`.
    pub fn init(&self, device: &Device) -> SequenceDetector {
        SequenceDetector {
            gru: GruConfig::new(self.input, self.hidden, true).init(device),
            head: LinearConfig::new(self.hidden, self.classes).init(device),
            hidden: self.hidden,
        }
    }
}

impl SequenceDetector {
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

impl SequenceDetector {
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
        // Inserts `added` copies of `fill` at `at` along `dim` of a parameter.
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
        let at = embedding + templates;
        let widen = |mut gate: GateController| {
            let weight = gate.input_transform.weight.val();
            gate.input_transform.weight = Param::from_tensor(insert(weight, 0, at, added, 0.0));
            gate
        };
        let mut gru = self.gru;
        gru.update_gate = widen(gru.update_gate);
        gru.reset_gate = widen(gru.reset_gate);
        gru.new_gate = widen(gru.new_gate);
        let mut head = self.head;
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
        Self {
            gru,
            head,
            hidden: self.hidden,
        }
    }
}

/// Width of the vector [`message_vector`] builds.
pub fn message_vector_width(embedding: usize, templates: usize) -> usize {
    embedding + templates
}

/// How the detector sees one message: the autoencoder's embedding of its template, then the
/// template's identity (one-hot over the `templates` training templates; all zero for a
/// template never seen in training). The embedding lets similar messages share what was
/// learned; the identity keeps templates whose words overlap (`added to invalidSet` and
/// `added to blockMap`) apart, so a rare but exact order in training is learned sharply.
pub fn message_vector(embedding: &[f32], class: Option<usize>, templates: usize) -> Vec<f32> {
    let mut vector = Vec::with_capacity(message_vector_width(embedding.len(), templates));
    vector.extend_from_slice(embedding);
    vector.resize(embedding.len() + templates, 0.0);
    if let Some(class) = class.filter(|&c| c < templates) {
        vector[embedding.len() + class] = 1.0;
    }
    vector
}

/// Lays out windows for [`SequenceDetector::forward`]: each window (up to `steps` message
/// vectors of `vector_width`, oldest first) is left-padded to `steps`; a real step is
/// `[vector, 0]`, a padding step `[0, ..., 0, 1]`, so the detector knows where a session
/// starts.
pub fn window_input<W: AsRef<[f32]>>(
    windows: &[Vec<W>],
    steps: usize,
    vector_width: usize,
    device: &Device,
) -> Tensor<3> {
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
                row[..vector_width].copy_from_slice(window[t - pad].as_ref());
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [windows.len(), steps, width]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{self, BackendKind};

    #[test]
    fn a_grown_detector_reads_known_windows_as_before() {
        let (device, _) = backend::device(BackendKind::Flex).unwrap();
        let (embedding, templates, added) = (3, 4, 2);
        let width = message_vector_width(embedding, templates);
        let detector = SequenceDetectorConfig::new(width + 1, 8, templates + 2).init(&device);
        let vectors: Vec<Vec<f32>> = (0..templates)
            .map(|class| message_vector(&[0.5, -0.25, class as f32 / 4.0], Some(class), templates))
            .collect();
        let window: Vec<&[f32]> = vec![&vectors[2], &vectors[0], &vectors[3]];
        let logits = |detector: &SequenceDetector, window: &[&[f32]], width: usize| {
            detector
                .forward(window_input(&[window.to_vec()], 5, width, &device))
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let before = logits(&detector, &window, width);

        let grown = detector.grow(embedding, templates, added);
        let grown_width = message_vector_width(embedding, templates + added);
        let widened: Vec<Vec<f32>> = window
            .iter()
            .map(|v| {
                let mut v = v.to_vec();
                v.splice(width..width, vec![0.0; added]);
                v
            })
            .collect();
        let widened: Vec<&[f32]> = widened.iter().map(Vec::as_slice).collect();
        let after = logits(&grown, &widened, grown_width);

        assert_eq!(after.len(), before.len() + added);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(
            close(&after[..templates], &before[..templates]),
            "{before:?} {after:?}"
        );
        assert!(
            close(&after[templates + added..], &before[templates..]),
            "end and unseen keep their logits after the added classes"
        );
    }
}

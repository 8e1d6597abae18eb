//! The sequence anomaly detector: a GRU over the vectors of a session's previous events
//! (autoencoder embedding + template identity) that predicts which template comes next
//! (DeepLog's idea, on learned embeddings). Its
//! classes are the training templates, then "the session ends", then "a template never seen".

use burn::nn::{Gru, GruConfig, Linear, LinearConfig};
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

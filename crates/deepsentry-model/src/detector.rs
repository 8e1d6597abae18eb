//! The sequence anomaly detector: a GRU over the embeddings of a session's previous events
//! that predicts which template comes next (DeepLog's idea, on learned embeddings). Its
//! classes are the training templates, then "the session ends", then "a template never seen".

use burn::nn::{Gru, GruConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Sizes of the sequence detector.
#[derive(Config, Debug)]
pub struct SequenceDetectorConfig {
    /// Width of one step of input: the embedding size plus one padding flag.
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

/// Lays out windows for [`SequenceDetector::forward`]: each window (up to `steps` embeddings,
/// oldest first) is left-padded to `steps`; a real step is `[embedding, 0]`, a padding step
/// `[0, ..., 0, 1]`, so the detector knows where a session starts.
pub fn window_input<W: AsRef<[f32]>>(
    windows: &[Vec<W>],
    steps: usize,
    embedding: usize,
    device: &Device,
) -> Tensor<3> {
    let width = embedding + 1;
    let mut data = vec![0.0f32; windows.len() * steps * width];
    for (b, window) in windows.iter().enumerate() {
        let window = &window[window.len().saturating_sub(steps)..];
        let pad = steps - window.len();
        for t in 0..steps {
            let row = &mut data[(b * steps + t) * width..(b * steps + t + 1) * width];
            if t < pad {
                row[embedding] = 1.0;
            } else {
                row[..embedding].copy_from_slice(window[t - pad].as_ref());
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [windows.len(), steps, width]), device)
}

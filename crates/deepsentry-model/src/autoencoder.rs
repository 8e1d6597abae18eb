//! The text autoencoder: hashed token features of a template -> a small embedding -> the
//! features again. The embedding is how the sequence detector sees a message; the
//! reconstruction error says how unlike the training templates a message is.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, tanh};

/// Sizes of the text autoencoder.
#[derive(Config, Debug)]
pub struct TextAutoencoderConfig {
    /// Length of the hashed feature vector.
    pub feature_dims: usize,
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Size of the embedding.
    pub embedding: usize,
}

/// Encoder and decoder, two dense layers each.
#[derive(Module, Debug)]
pub struct TextAutoencoder {
    encoder_hidden: Linear,
    encoder_out: Linear,
    decoder_hidden: Linear,
    decoder_out: Linear,
}

impl TextAutoencoderConfig {
    /// A freshly initialized autoencoder on `device`.
    pub fn init(&self, device: &Device) -> TextAutoencoder {
        TextAutoencoder {
            encoder_hidden: LinearConfig::new(self.feature_dims, self.hidden).init(device),
            encoder_out: LinearConfig::new(self.hidden, self.embedding).init(device),
            decoder_hidden: LinearConfig::new(self.embedding, self.hidden).init(device),
            decoder_out: LinearConfig::new(self.hidden, self.feature_dims).init(device),
        }
    }
}

impl TextAutoencoder {
    /// Features `[n, feature_dims]` -> embeddings `[n, embedding]` in (-1, 1).
    pub fn encode(&self, features: Tensor<2>) -> Tensor<2> {
        tanh(
            self.encoder_out
                .forward(relu(self.encoder_hidden.forward(features))),
        )
    }

    /// Embeddings -> reconstructed features in (0, 1).
    pub fn decode(&self, embedding: Tensor<2>) -> Tensor<2> {
        sigmoid(
            self.decoder_out
                .forward(relu(self.decoder_hidden.forward(embedding))),
        )
    }

    /// Embeddings and per-row mean squared reconstruction error `[n]`.
    pub fn forward(&self, features: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let embedding = self.encode(features.clone());
        let reconstruction = self.decode(embedding.clone());
        let error = (reconstruction - features)
            .powf_scalar(2.0)
            .mean_dim(1)
            .squeeze_dim(1);
        (embedding, error)
    }
}

//! Hashed token features: the fixed-size input of the text autoencoder.
//!
//! A template becomes a vector of `dims` numbers: each token and each pair of neighbouring
//! tokens is hashed to one position, which is set to 1. Hashing keeps the input size fixed
//! whatever the vocabulary, so a template never seen in training still has features.

// FNV-1a: stable across builds and platforms, since features must match the trained model.
use deepsentry_core::hash::fnv1a;

use crate::normalize::tokens;

/// The feature vector of `template` (length `dims`, values 0 or 1).
pub fn hashed_features(template: &str, dims: usize) -> Vec<f32> {
    let mut features = vec![0.0; dims];
    let tokens = tokens(template);
    for token in &tokens {
        features[(fnv1a(token.as_bytes(), 0) % dims as u64) as usize] = 1.0;
    }
    for pair in tokens.windows(2) {
        let h = fnv1a(pair[1].as_bytes(), fnv1a(pair[0].as_bytes(), 1));
        features[(h % dims as u64) as usize] = 1.0;
    }
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_template_same_features_and_different_ones_differ() {
        let a = hashed_features("<NUM> INFO Receiving block <BLK>", 256);
        let b = hashed_features("<NUM> INFO Receiving block <BLK>", 256);
        let c = hashed_features("<NUM> WARN Unexpected error deleting block <BLK>", 256);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 256);
        assert!(a.iter().all(|&x| x == 0.0 || x == 1.0));
        assert!(a.iter().sum::<f32>() >= 5.0);
    }
}

//! FNV-1a: a hash that is the same on every build and platform, for values that outlive the
//! binary or must match a trained model (file fingerprints in checkpoints, hashed features,
//! held-out splits, alert ids).

/// FNV-1a's offset basis.
const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a's prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a hash being computed over one or more byte strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Fnv1a {
    /// A hash of nothing yet, its offset basis mixed with `seed` (0: plain FNV-1a).
    pub fn with_seed(seed: u64) -> Self {
        Self(OFFSET ^ seed)
    }

    /// Hashes `bytes` after what came before.
    pub fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
        }
        self
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The FNV-1a hash of `bytes`, its offset basis mixed with `seed`.
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    Fnv1a::with_seed(seed).write(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The reference values of FNV-1a (64 bit).
        assert_eq!(fnv1a(b"", 0), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a", 0), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar", 0), 0x8594_4171_f739_67e8);
        assert_eq!(
            Fnv1a::with_seed(7).write(b"foo").write(b"bar").finish(),
            fnv1a(b"foobar", 7)
        );
    }
}

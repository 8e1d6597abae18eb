//! The signal that tells sources to stop reading.

use tokio_util::sync::CancellationToken;

/// Fired once when the pipeline should stop: sources stop reading, flush what they hold and
/// return; transforms and sinks then finish as their inputs close. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignal(CancellationToken);

impl ShutdownSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal that fires with this one, or on its own (one component stopping while the
    /// pipeline goes on).
    pub fn child(&self) -> Self {
        Self(self.0.child_token())
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes when the signal fires.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }
}

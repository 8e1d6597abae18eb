//! The input of a transform or a sink: the batches of its channel.
//!
//! The channel outlives the component: when a reload replaces the component, the running
//! instance is released (its `recv` returns `None` and it finishes what it holds) and the new
//! instance reads on from the same channel, so nothing queued in between is lost.

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;

/// A component's input channel, as one instance of the component sees it.
#[derive(Debug)]
pub struct Input {
    channel: Arc<Mutex<mpsc::Receiver<Batch>>>,
    release: CancellationToken,
    released: bool,
}

impl Input {
    /// An input on a channel the topology keeps, released when `release` fires.
    pub(crate) fn shared(
        channel: Arc<Mutex<mpsc::Receiver<Batch>>>,
        release: CancellationToken,
    ) -> Self {
        Self {
            channel,
            release,
            released: false,
        }
    }

    /// The next batch. `None` once every producer has ended and the channel is drained, or
    /// once this instance is released (what is still queued then goes to its successor).
    pub async fn recv(&mut self) -> Option<Batch> {
        if self.released {
            return None;
        }
        let mut channel = tokio::select! {
            biased;
            _ = self.release.cancelled() => {
                self.released = true;
                return None;
            }
            channel = self.channel.lock() => channel,
        };
        tokio::select! {
            biased;
            _ = self.release.cancelled() => {
                self.released = true;
                None
            }
            batch = channel.recv() => batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_input_leaves_the_queue_to_its_successor() {
        let (tx, rx) = mpsc::channel(4);
        let channel = Arc::new(Mutex::new(rx));
        let release = CancellationToken::new();
        let mut first = Input::shared(channel.clone(), release.clone());
        for i in 0..3 {
            tx.send(Batch::new(vec![crate::Event::from_str(
                &i.to_string(),
                chrono::Utc::now(),
                crate::Origin::new("s", "s"),
            )]))
            .await
            .unwrap();
        }
        assert_eq!(first.recv().await.unwrap().events[0].message(), "0");
        release.cancel();
        assert!(first.recv().await.is_none());
        let mut second = Input::shared(channel, CancellationToken::new());
        assert_eq!(second.recv().await.unwrap().events[0].message(), "1");
        assert_eq!(second.recv().await.unwrap().events[0].message(), "2");
        drop(tx);
        assert!(
            second.recv().await.is_none(),
            "closed once every sender is gone"
        );
    }
}

//! The sending side of a component: fan-out to every consumer, with backpressure.

use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::metrics::Counter;

/// Every consumer of this output is gone; the producer should stop.
#[derive(Debug, thiserror::Error)]
#[error("no component consumes this output any more")]
pub struct OutputClosed;

/// Sends batches to every component that lists this one in its `inputs`. A full channel makes
/// the sender wait (backpressure); nothing is dropped here.
#[derive(Debug, Clone)]
pub struct Output {
    /// Each consumer's id, channel, and its `events_received` counter.
    targets: Vec<(String, mpsc::Sender<Batch>, Counter)>,
    events_sent: Counter,
}

impl Output {
    /// An output feeding `targets` (consumer id, channel), counting events in `events_sent`.
    pub fn new(targets: Vec<(String, mpsc::Sender<Batch>)>, events_sent: Counter) -> Self {
        Self::counted(
            targets
                .into_iter()
                .map(|(id, tx)| (id, tx, Counter::default()))
                .collect(),
            events_sent,
        )
    }

    /// Like [`Output::new`], with each consumer's counter of the events it receives.
    pub fn counted(
        targets: Vec<(String, mpsc::Sender<Batch>, Counter)>,
        events_sent: Counter,
    ) -> Self {
        Self {
            targets,
            events_sent,
        }
    }

    /// Sends `batch` to every consumer (a clone to each but the last). A consumer that has
    /// stopped is dropped from the list with a log line; once none is left, returns
    /// [`OutputClosed`].
    pub async fn send(&mut self, batch: Batch) -> Result<(), OutputClosed> {
        if batch.is_empty() && self.targets.len() <= 1 {
            // An empty batch may still carry acknowledgements; dropping it delivers them.
            return if self.targets.is_empty() {
                Err(OutputClosed)
            } else {
                Ok(())
            };
        }
        let count = batch.len() as u64;
        let mut closed = Vec::new();
        let last = self.targets.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, (id, tx, received)) in self.targets.iter().enumerate() {
            let item = if i == last {
                batch.take().expect("sent once")
            } else {
                batch.as_ref().expect("kept until last").clone()
            };
            if tx.send(item).await.is_err() {
                tracing::warn!(consumer = %id, "consumer stopped; no longer sending to it");
                closed.push(i);
            } else {
                received.add(count);
            }
        }
        self.remove(&closed);
        self.events_sent.add(count);
        if self.targets.is_empty() {
            Err(OutputClosed)
        } else {
            Ok(())
        }
    }

    /// [`send`](Self::send) for sources that read on a blocking thread (never call it from
    /// inside the async runtime).
    pub fn blocking_send(&mut self, batch: Batch) -> Result<(), OutputClosed> {
        futures::executor::block_on(self.send(batch))
    }

    fn remove(&mut self, closed: &[usize]) {
        for &i in closed.iter().rev() {
            self.targets.remove(i);
        }
    }

    /// Whether any consumer is left.
    pub fn is_connected(&self) -> bool {
        !self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckToken;
    use crate::event::{Event, Origin};

    #[tokio::test]
    async fn fans_out_to_every_consumer_and_acks_after_all() {
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let mut out = Output::new(
            vec![("a".into(), tx1), ("b".into(), tx2)],
            Counter::default(),
        );
        let (token, mut ack) = AckToken::new();
        let event = Event::from_str("x", chrono::Utc::now(), Origin::new("s", "t"));
        out.send(Batch::with_ack(vec![event], token)).await.unwrap();
        let first = rx1.recv().await.unwrap();
        assert_eq!(first.events[0].message(), "x");
        drop(first);
        assert!(ack.try_recv().is_err(), "b still holds the batch");
        drop(rx2.recv().await.unwrap());
        assert_eq!(ack.await.unwrap(), crate::AckStatus::Delivered);
    }

    #[tokio::test]
    async fn closed_consumers_are_dropped() {
        let (tx1, rx1) = mpsc::channel(4);
        let mut out = Output::new(vec![("a".into(), tx1)], Counter::default());
        drop(rx1);
        let event = Event::from_str("x", chrono::Utc::now(), Origin::new("s", "t"));
        assert!(out.send(Batch::new(vec![event])).await.is_err());
        assert!(!out.is_connected());
    }
}

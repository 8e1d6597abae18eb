//! The sending side of a component: fan-out to every consumer, with backpressure.

use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::metrics::Counter;

/// Every consumer of this output is gone; the producer should stop.
#[derive(Debug, thiserror::Error)]
#[error("no component consumes this output any more")]
pub struct OutputClosed;

/// Sends batches to every component that lists this one in its `inputs`. A full channel makes
/// the sender wait (backpressure); nothing is dropped here. A consumer that has stopped (it
/// failed, and the topology closed its channel) is skipped from then on, and every batch it
/// misses is marked lost, so no source checkpoint moves past events it did not get.
#[derive(Debug, Clone)]
pub struct Output {
    /// Each consumer's id, channel, and its `events_received` counter.
    targets: Vec<(String, mpsc::Sender<Batch>, Counter)>,
    /// How many of `targets` have stopped (the last ones: a stopped target moves to the end).
    stopped: usize,
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
            stopped: 0,
            events_sent,
        }
    }

    /// Sends `batch` to every running consumer (a clone to each but the last). A consumer
    /// found stopped is skipped from then on, with a log line; once none is left, returns
    /// [`OutputClosed`].
    pub async fn send(&mut self, batch: Batch) -> Result<(), OutputClosed> {
        let running = self.targets.len() - self.stopped;
        if self.stopped > 0 {
            batch.mark_lost();
        }
        if batch.is_empty() && running <= 1 {
            // An empty batch may still carry acknowledgements: with a consumer left, there is
            // nothing to deliver and they are settled here; with none, they are lost.
            return if running == 0 {
                Err(OutputClosed)
            } else {
                batch.discard();
                Ok(())
            };
        }
        let count = batch.len() as u64;
        let mut closed = Vec::new();
        let last = running.saturating_sub(1);
        let mut batch = Some(batch);
        for (i, (id, tx, received)) in self.targets[..running].iter().enumerate() {
            let item = if i == last {
                batch.take().expect("sent once")
            } else {
                batch.as_ref().expect("kept until last").clone()
            };
            // A batch a stopped consumer refuses is dropped unsettled: lost.
            if tx.send(item).await.is_err() {
                tracing::warn!(consumer = %id, "consumer stopped; no longer sending to it");
                closed.push(i);
            } else {
                received.add(count);
            }
        }
        self.stop(&closed);
        self.events_sent.add(count);
        if self.is_connected() {
            Ok(())
        } else {
            Err(OutputClosed)
        }
    }

    /// [`send`](Self::send) for sources that read on a blocking thread (never call it from
    /// inside the async runtime).
    pub fn blocking_send(&mut self, batch: Batch) -> Result<(), OutputClosed> {
        futures::executor::block_on(self.send(batch))
    }

    /// Moves the targets at `closed` (ascending indices of running ones) to the stopped end.
    fn stop(&mut self, closed: &[usize]) {
        for &i in closed.iter().rev() {
            let target = self.targets.remove(i);
            self.targets.push(target);
            self.stopped += 1;
        }
    }

    /// Whether any consumer is still running.
    pub fn is_connected(&self) -> bool {
        self.targets.len() > self.stopped
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
        first.delivered();
        assert!(ack.try_recv().is_err(), "b still holds the batch");
        rx2.recv().await.unwrap().delivered();
        assert_eq!(ack.await.unwrap(), crate::AckStatus::Delivered);
    }

    #[tokio::test]
    async fn a_consumer_that_stopped_loses_its_copy_and_the_others_go_on() {
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let mut out = Output::new(
            vec![("a".into(), tx1), ("b".into(), tx2)],
            Counter::default(),
        );
        rx2.close();
        let (token, ack) = AckToken::new();
        let event = Event::from_str("x", chrono::Utc::now(), Origin::new("s", "t"));
        out.send(Batch::with_ack(vec![event], token)).await.unwrap();
        assert!(out.is_connected(), "a still consumes");
        rx1.recv().await.unwrap().delivered();
        assert_eq!(ack.await.unwrap(), crate::AckStatus::Lost);
        assert!(rx2.try_recv().is_err());
        // Later batches are lost too: b never gets them.
        let (token, ack) = AckToken::new();
        let event = Event::from_str("y", chrono::Utc::now(), Origin::new("s", "t"));
        out.send(Batch::with_ack(vec![event], token)).await.unwrap();
        rx1.recv().await.unwrap().delivered();
        assert_eq!(ack.await.unwrap(), crate::AckStatus::Lost);
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

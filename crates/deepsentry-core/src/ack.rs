//! End-to-end acknowledgements.
//!
//! A source that needs to know when its events are delivered (to move a file checkpoint or
//! commit a Kafka offset) attaches an [`AckToken`] to each batch it sends. The token is cloned
//! along with the batch through every fan-out and transform, and every clone is settled by
//! whoever ends its journey: a sink that wrote it ([`AckToken::done`]), a transform that
//! discarded its events on purpose (`done` too), or a sink that gave up on it for good
//! ([`AckToken::fail`]). When the last clone is dropped, the source is told the batch's
//! [`AckStatus`]: [`Lost`](AckStatus::Lost) if any clone was dropped unsettled (a component
//! panicked, returned an error or was stopped while holding it: nobody wrote it and nobody
//! decided to drop it), else [`Failed`](AckStatus::Failed) if a sink gave up on it, else
//! [`Delivered`](AckStatus::Delivered). An event still in flight when the process dies is
//! never acknowledged: at-least-once delivery.
//!
//! [`ordered_acks`] gives a source its acknowledgements back in the order the batches were
//! sent, which is what a checkpoint needs: an offset may only move past a line once every line
//! before it is done too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// The outcome of a batch once every component that received it is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Every sink that received the batch delivered it (or it was filtered out on the way).
    Delivered,
    /// At least one sink gave up on the batch for good (counted and logged by that sink).
    Failed,
    /// At least one copy of the batch was dropped by a component that stopped while holding
    /// it: the source must not move past it (it is read again on the next start).
    Lost,
}

#[derive(Debug)]
struct AckInner {
    failed: AtomicBool,
    lost: AtomicBool,
    notify: Option<oneshot::Sender<AckStatus>>,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        if let Some(notify) = self.notify.take() {
            let status = if self.lost.load(Ordering::Acquire) {
                AckStatus::Lost
            } else if self.failed.load(Ordering::Acquire) {
                AckStatus::Failed
            } else {
                AckStatus::Delivered
            };
            // The source may have stopped listening (shutdown past its grace period).
            let _ = notify.send(status);
        }
    }
}

/// A handle on one source batch's delivery; cheap to clone. Each clone must be settled
/// ([`done`](Self::done) or [`fail`](Self::fail)) before it is dropped, else the batch is
/// [`Lost`](AckStatus::Lost).
#[derive(Debug)]
pub struct AckToken {
    inner: Arc<AckInner>,
    settled: AtomicBool,
}

impl Clone for AckToken {
    /// Another copy to settle (a fan-out branch's).
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settled: AtomicBool::new(false),
        }
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !*self.settled.get_mut() {
            self.inner.lost.store(true, Ordering::Release);
        }
    }
}

impl AckToken {
    /// A token and the receiver that learns its status once the last clone is dropped.
    pub fn new() -> (Self, oneshot::Receiver<AckStatus>) {
        let (tx, rx) = oneshot::channel();
        let token = AckToken {
            inner: Arc::new(AckInner {
                failed: AtomicBool::new(false),
                lost: AtomicBool::new(false),
                notify: Some(tx),
            }),
            settled: AtomicBool::new(false),
        };
        (token, rx)
    }

    /// Settles this copy: its events were written, or discarded on purpose.
    pub fn done(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// Marks the batch lost: a consumer that should have had it is gone.
    pub(crate) fn lose(&self) {
        self.inner.lost.store(true, Ordering::Release);
    }

    /// Settles this copy as given up on for good; the source learns it when the last clone
    /// drops.
    pub fn fail(&self) {
        self.inner.failed.store(true, Ordering::Release);
        self.settled.store(true, Ordering::Release);
    }
}

/// Creates the two halves of an in-order acknowledgement queue for a source.
///
/// The [`AckRegistrar`] side is cheap, synchronous and can be used from a blocking thread;
/// the [`AckStream`] side yields each registered entry with its status, in registration order.
pub fn ordered_acks<T: Send + 'static>() -> (AckRegistrar<T>, AckStream<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (AckRegistrar { tx }, AckStream { rx, current: None })
}

/// Hands out [`AckToken`]s and remembers, in order, what each one stands for.
#[derive(Debug)]
pub struct AckRegistrar<T> {
    tx: mpsc::UnboundedSender<(oneshot::Receiver<AckStatus>, T)>,
}

impl<T> Clone for AckRegistrar<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> AckRegistrar<T> {
    /// Registers `entry` (typically a file offset) and returns the token to attach to its batch.
    pub fn register(&self, entry: T) -> AckToken {
        let (token, rx) = AckToken::new();
        // If the stream side is gone the source is shutting down; the token still works.
        let _ = self.tx.send((rx, entry));
        token
    }
}

/// Yields registered entries with their [`AckStatus`], strictly in registration order.
#[derive(Debug)]
pub struct AckStream<T> {
    rx: mpsc::UnboundedReceiver<(oneshot::Receiver<AckStatus>, T)>,
    current: Option<(oneshot::Receiver<AckStatus>, T)>,
}

impl<T> AckStream<T> {
    /// Waits for the oldest outstanding entry to be acknowledged. Returns `None` once every
    /// registrar is dropped and every entry has been yielded. Cancel-safe: an entry being
    /// waited on stays queued if the future is dropped.
    pub async fn next(&mut self) -> Option<(AckStatus, T)> {
        if self.current.is_none() {
            self.current = Some(self.rx.recv().await?);
        }
        let (rx, _) = self.current.as_mut().expect("set above");
        // A sender dropped without a status cannot happen (Drop always sends); be safe anyway.
        let status = rx.await.unwrap_or(AckStatus::Lost);
        let (_, entry) = self.current.take().expect("set above");
        Some((status, entry))
    }

    /// Whether every registrar is dropped and every entry has been yielded: nothing more will
    /// come.
    pub fn is_finished(&self) -> bool {
        self.current.is_none() && self.rx.is_closed() && self.rx.is_empty()
    }

    /// Returns the next entry only if it is already acknowledged.
    pub fn try_next(&mut self) -> Option<(AckStatus, T)> {
        if self.current.is_none() {
            self.current = Some(self.rx.try_recv().ok()?);
        }
        let (rx, _) = self.current.as_mut().expect("set above");
        let status = match rx.try_recv() {
            Ok(status) => status,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => AckStatus::Lost,
        };
        let (_, entry) = self.current.take().expect("set above");
        Some((status, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivered_when_every_clone_is_done() {
        let (token, rx) = AckToken::new();
        let clone = token.clone();
        token.done();
        drop(token);
        clone.done();
        drop(clone);
        assert_eq!(rx.await.unwrap(), AckStatus::Delivered);
    }

    #[tokio::test]
    async fn one_failing_clone_fails_the_batch() {
        let (token, rx) = AckToken::new();
        let clone = token.clone();
        clone.fail();
        drop(clone);
        token.done();
        drop(token);
        assert_eq!(rx.await.unwrap(), AckStatus::Failed);
    }

    #[tokio::test]
    async fn a_clone_dropped_unsettled_loses_the_batch() {
        let (token, rx) = AckToken::new();
        let clone = token.clone();
        token.done();
        drop(token);
        drop(clone); // a component that stopped with it
        assert_eq!(rx.await.unwrap(), AckStatus::Lost);
    }

    #[tokio::test]
    async fn a_panic_while_holding_a_token_loses_the_batch() {
        let (token, rx) = AckToken::new();
        let held = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _holding = token;
            panic!("component bug");
        }));
        assert!(held.is_err());
        assert_eq!(rx.await.unwrap(), AckStatus::Lost);
    }

    #[tokio::test]
    async fn ordered_stream_waits_for_the_oldest() {
        let (registrar, mut stream) = ordered_acks::<u32>();
        let first = registrar.register(1);
        let second = registrar.register(2);
        second.done();
        drop(second);
        assert!(stream.try_next().is_none(), "2 is done but 1 is not");
        first.done();
        drop(first);
        assert_eq!(stream.next().await, Some((AckStatus::Delivered, 1)));
        assert_eq!(stream.next().await, Some((AckStatus::Delivered, 2)));
        assert!(!stream.is_finished(), "the registrar may still register");
        drop(registrar);
        assert!(stream.is_finished());
        assert_eq!(stream.next().await, None);
    }
}

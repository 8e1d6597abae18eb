//! Batches: what the channels between components carry.

use crate::ack::AckToken;
use crate::event::Event;

/// A group of events moving together through the pipeline, with the acknowledgement tokens of
/// the source batches they came from. Cloning a batch (fan-out) clones the tokens, so the
/// source hears back only once every branch is done. The component that ends a batch's
/// journey settles it: [`delivered`](Self::delivered), [`discard`](Self::discard) or
/// [`fail`](Self::fail); one dropped unsettled (a component that panicked or stopped with an
/// error while holding it) keeps its source from moving past it.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The events, in source order.
    pub events: Vec<Event>,
    acks: Vec<AckToken>,
}

impl Batch {
    /// A batch with no acknowledgement attached.
    pub fn new(events: Vec<Event>) -> Self {
        Self {
            events,
            acks: Vec::new(),
        }
    }

    /// A batch whose delivery is reported through `ack`.
    pub fn with_ack(events: Vec<Event>, ack: AckToken) -> Self {
        Self {
            events,
            acks: vec![ack],
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends `other`'s events and takes over its acknowledgements (used by transforms that
    /// re-batch).
    pub fn append(&mut self, mut other: Batch) {
        self.events.append(&mut other.events);
        self.acks.append(&mut other.acks);
    }

    /// Moves the acknowledgements of this batch into `target`, leaving this batch with none.
    /// A transform that holds events back (a sequence window) uses this to keep the source's
    /// checkpoint from moving until the held events are emitted.
    pub fn take_acks(&mut self) -> Vec<AckToken> {
        std::mem::take(&mut self.acks)
    }

    /// Attaches acknowledgement tokens to this batch.
    pub fn add_acks(&mut self, acks: impl IntoIterator<Item = AckToken>) {
        self.acks.extend(acks);
    }

    /// Marks every source batch behind this one as failed for good (a sink gave up, counted
    /// and logged it).
    pub fn fail(&self) {
        for ack in &self.acks {
            ack.fail();
        }
    }

    /// Marks every source batch behind this one as lost: a consumer that should have had it
    /// has stopped (see [`crate::output::Output`]).
    pub(crate) fn mark_lost(&self) {
        self.acks.iter().for_each(AckToken::lose);
    }

    /// A sink wrote this batch: settles its acknowledgements.
    pub fn delivered(self) {
        self.acks.iter().for_each(AckToken::done);
    }

    /// A transform dropped these events on purpose (counted): settles the acknowledgements,
    /// so the source may move past them. A batch dropped without this or
    /// [`delivered`](Self::delivered) or [`fail`](Self::fail) is lost (see [`crate::ack`]).
    pub fn discard(self) {
        self.acks.iter().for_each(AckToken::done);
    }
}

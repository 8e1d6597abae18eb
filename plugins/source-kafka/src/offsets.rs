//! Which offsets may be committed: the bookkeeping between the batches a source sends and the
//! acknowledgements that come back, shared by the offset-storing task and the rebalance
//! callback (which must settle revoked partitions before they change owner).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deepsentry_core::ack::AckStream;
use deepsentry_core::metrics::{ComponentMetrics, Counter};
use deepsentry_core::AckStatus;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::TopicPartitionList;

/// The messages of one batch, per partition: the last offset and how many messages.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOffsets {
    partitions: Vec<PartitionSpan>,
    messages: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct PartitionSpan {
    topic: String,
    partition: i32,
    last_offset: i64,
    messages: usize,
}

impl BatchOffsets {
    /// Notes one message of the batch.
    pub fn record(&mut self, topic: &str, partition: i32, offset: i64) {
        self.messages += 1;
        // A batch spans few partitions; a linear search beats hashing here.
        match self
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition && p.topic == topic)
        {
            Some(span) => {
                span.last_offset = span.last_offset.max(offset);
                span.messages += 1;
            }
            None => self.partitions.push(PartitionSpan {
                topic: topic.to_owned(),
                partition,
                last_offset: offset,
                messages: 1,
            }),
        }
    }

    /// How many messages the batch holds (including those that made no event).
    pub fn messages(&self) -> usize {
        self.messages
    }
}

type PartitionId = (String, i32);

#[derive(Default)]
struct Book {
    acks: Option<AckStream<BatchOffsets>>,
    /// Messages sent into the pipeline and not yet acknowledged, per partition.
    in_flight: HashMap<PartitionId, usize>,
    /// Partitions whose offsets must not move: messages of theirs were lost in the pipeline
    /// (a component stopped while holding them), so they are read again from the last commit.
    stalled: std::collections::HashSet<PartitionId>,
    not_delivered: Counter,
    lost: Counter,
    source_id: String,
}

/// The shared offset state of one `kafka` source.
#[derive(Default)]
pub struct OffsetBook {
    book: Mutex<Book>,
}

impl OffsetBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("offset book lock poisoned")
    }

    /// Hands the book the acknowledgements of the batches the source will send.
    pub fn attach(&self, acks: AckStream<BatchOffsets>, metrics: ComponentMetrics, id: &str) {
        let mut book = self.lock();
        book.acks = Some(acks);
        book.not_delivered = metrics.counter("events_not_delivered");
        book.lost = metrics.counter("events_lost_in_pipeline");
        book.source_id = id.to_owned();
    }

    /// Records a batch as sent (call before registering its acknowledgement).
    pub fn sent(&self, offsets: &BatchOffsets) {
        let mut book = self.lock();
        for span in &offsets.partitions {
            *book
                .in_flight
                .entry((span.topic.clone(), span.partition))
                .or_default() += span.messages;
        }
    }

    /// Stores the offsets of every batch acknowledged so far, in order. Returns `true` once
    /// the source has stopped sending and every batch is acknowledged.
    pub fn apply_ready<C, K>(&self, consumer: &K) -> bool
    where
        C: ConsumerContext,
        K: Consumer<C> + ?Sized,
    {
        let mut book = self.lock();
        let Book {
            acks,
            in_flight,
            stalled,
            not_delivered,
            lost,
            source_id,
        } = &mut *book;
        let Some(acks) = acks.as_mut() else {
            return true;
        };
        while let Some((status, offsets)) = acks.try_next() {
            if status == AckStatus::Failed {
                not_delivered.add(offsets.messages as u64);
                tracing::error!(
                    source = %source_id,
                    messages = offsets.messages,
                    "a sink gave up on these messages (see its error); their offsets are \
                     committed anyway so the pipeline moves on"
                );
            }
            if status == AckStatus::Lost {
                lost.add(offsets.messages as u64);
                tracing::error!(
                    source = %source_id,
                    messages = offsets.messages,
                    "messages were lost in the pipeline (a component stopped while holding \
                     them); their partitions' offsets stay where they are, so they are read \
                     again from the last commit (counted in events_lost_in_pipeline)"
                );
            }
            for span in offsets.partitions {
                let key = (span.topic, span.partition);
                if let Some(count) = in_flight.get_mut(&key) {
                    *count = count.saturating_sub(span.messages);
                }
                if status == AckStatus::Lost {
                    stalled.insert(key);
                    continue;
                }
                if stalled.contains(&key) {
                    continue;
                }
                // librdkafka stores `last_offset + 1`, the next message to read. A partition
                // revoked meanwhile refuses the store; its new owner reads from the last
                // commit.
                if let Err(e) = consumer.store_offset(&key.0, key.1, span.last_offset) {
                    tracing::debug!(
                        source = %source_id,
                        "offset {} of {}/{} not stored: {e}",
                        span.last_offset,
                        key.0,
                        key.1
                    );
                }
            }
        }
        acks.is_finished()
    }

    /// Waits up to `timeout` for the in-flight messages of the `revoked` partitions to be
    /// acknowledged, storing offsets as acknowledgements arrive, then forgets those
    /// partitions. Returns how many messages were still in flight when it gave up.
    pub fn drain_revoked<C, K>(
        &self,
        revoked: &TopicPartitionList,
        timeout: Duration,
        consumer: &K,
    ) -> usize
    where
        C: ConsumerContext,
        K: Consumer<C> + ?Sized,
    {
        let deadline = Instant::now() + timeout;
        let keys: Vec<PartitionId> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        loop {
            self.apply_ready(consumer);
            let pending: usize = {
                let book = self.lock();
                keys.iter().filter_map(|key| book.in_flight.get(key)).sum()
            };
            if pending == 0 || Instant::now() >= deadline {
                let mut book = self.lock();
                for key in &keys {
                    book.in_flight.remove(key);
                    book.stalled.remove(key);
                }
                return pending;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_offsets_keep_the_last_offset_per_partition() {
        let mut batch = BatchOffsets::default();
        batch.record("t", 0, 10);
        batch.record("t", 1, 5);
        batch.record("t", 0, 11);
        batch.record("u", 0, 3);
        assert_eq!(batch.messages(), 4);
        assert_eq!(batch.partitions.len(), 3);
        assert_eq!(batch.partitions[0].last_offset, 11);
        assert_eq!(batch.partitions[0].messages, 2);
    }
}

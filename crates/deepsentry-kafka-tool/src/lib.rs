//! Plain rdkafka clients for tests and benchmarks: create a topic, produce lines, read a topic
//! back, count what it holds, and copy one topic to another as fast as rdkafka allows (the
//! baseline the pipeline is measured against).
//!
//! Everything here is blocking and made for one-off use against a test broker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use deepsentry_kafka::client_config;

/// How long metadata and admin requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One message read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The message key, if any (lossy UTF-8).
    pub key: Option<String>,
    /// The payload (lossy UTF-8; empty for a null payload).
    pub payload: String,
    /// Headers in order, values as lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// One message to produce.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The key; `None` lets the partitioner spread messages.
    pub key: Option<String>,
    /// The payload.
    pub payload: String,
    /// Headers to attach.
    pub headers: Vec<(String, String)>,
}

/// Creates `topic` with `partitions` partitions (replication factor 1). A topic that exists
/// already is left as it is.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap, &[], &BTreeMap::new()).create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let results = runtime.block_on(admin.create_topics(&[new_topic], &options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Counts failed deliveries of a [`BaseProducer`].
#[derive(Debug, Default)]
struct DeliveryCount {
    failed: AtomicU64,
}

impl ClientContext for DeliveryCount {}

impl ProducerContext for DeliveryCount {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("kafka tools: delivery failed: {error}");
            }
        }
    }
}

/// A producer that waits (never drops) when its queue is full, and reports failed deliveries
/// at [`flush`](BulkProducer::flush).
pub struct BulkProducer {
    producer: BaseProducer<DeliveryCount>,
}

impl BulkProducer {
    /// A producer for `bootstrap` with `acks=all`, idempotence and a large queue.
    pub fn new(bootstrap: &str) -> anyhow::Result<Self> {
        let producer = client_config(
            bootstrap,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("linger.ms", "5"),
                ("queue.buffering.max.messages", "500000"),
            ],
            &BTreeMap::new(),
        )
        .create_with_context(DeliveryCount::default())
        .context("cannot create the Kafka producer")?;
        Ok(Self { producer })
    }

    /// Queues one message, waiting while librdkafka's queue is full.
    pub fn send(&self, topic: &str, message: &Outgoing) -> anyhow::Result<()> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = BaseRecord::<str, str>::to(topic)
            .payload(message.payload.as_str())
            .headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_str());
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued message is delivered; fails if any delivery failed.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.producer
            .flush(Duration::from_secs(120))
            .context("flushing the producer")?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        anyhow::ensure!(failed == 0, "{failed} messages were not delivered");
        Ok(())
    }
}

/// Produces every message of `messages` to `topic` and waits until all are acknowledged.
/// Returns how many were produced.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    messages: impl IntoIterator<Item = Outgoing>,
) -> anyhow::Result<usize> {
    let producer = BulkProducer::new(bootstrap)?;
    let mut count = 0;
    for message in messages {
        producer.send(topic, &message)?;
        count += 1;
        if count % 1024 == 0 {
            producer.poll();
        }
    }
    producer.flush()?;
    Ok(count)
}

/// A consumer reading every partition of `topic` from the beginning, outside any group. Waits
/// until `deadline` for the topic to exist (a sink may create it with its first message).
fn reader(bootstrap: &str, topic: &str, deadline: Instant) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "deepsentry-tools"),
            ("enable.auto.commit", "false"),
        ],
        &BTreeMap::new(),
    )
    .create()?;
    let partitions = loop {
        match partition_ids(&consumer, topic) {
            Ok(ids) if !ids.is_empty() => break ids,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(_) => anyhow::bail!("topic {topic} has no partitions"),
            Err(e) => return Err(e),
        }
    };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

fn partition_ids(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let topic_metadata = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} does not exist"))?;
    Ok(topic_metadata.partitions().iter().map(|p| p.id()).collect())
}

fn lossy(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Reads `topic` from the beginning until at least `expected` messages arrived and the topic
/// has been quiet for `settle` (so duplicates beyond `expected` are seen too), or until
/// `timeout`. Returns what it read, which is fewer than `expected` on a timeout.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    settle: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<Record>> {
    let deadline = Instant::now() + timeout;
    let consumer = reader(bootstrap, topic, deadline)?;
    let mut records = Vec::with_capacity(expected);
    let mut last_message = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_message = Instant::now();
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| (h.key.to_owned(), lossy(h.value).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    key: lossy(message.key()),
                    payload: lossy(message.payload()).unwrap_or_default(),
                    headers,
                    partition: message.partition(),
                    offset: message.offset(),
                });
            }
            Some(Err(error)) => eprintln!("kafka tools: consume error: {error}"),
            None if records.len() >= expected && last_message.elapsed() >= settle => break,
            None => {}
        }
    }
    Ok(records)
}

/// Reads `topic` from the beginning until `count` messages arrived; returns the seconds from
/// the first message to the `count`-th. Messages are counted, not kept, so the reader costs
/// little next to what it measures. (Partition watermarks would be cheaper still, but not
/// every Kafka-protocol broker reports them exactly.)
pub fn wait_for_count(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + timeout;
    let consumer = reader(bootstrap, topic, deadline)?;
    let mut first: Option<Instant> = None;
    let mut seen = 0;
    while seen < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "topic {topic} gave {seen} of {count} messages within {timeout:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                first.get_or_insert_with(Instant::now);
                seen += 1;
            }
            Some(Err(error)) => eprintln!("kafka tools: consume error: {error}"),
            None => {}
        }
    }
    Ok(first.map_or(0.0, |at| at.elapsed().as_secs_f64()))
}

/// Copies `count` messages from `from` to `to` with one consumer (in consumer group
/// `group`) and one producer, the straightforward rdkafka way: poll, send, flush at the end,
/// commit. Used as the baseline the pipeline's throughput is compared with.
pub fn copy_topic(
    bootstrap: &str,
    from: &str,
    to: &str,
    group: &str,
    count: usize,
    librdkafka_options: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client_config(
        bootstrap,
        &[
            ("group.id", group),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
        ],
        librdkafka_options,
    )
    .create()?;
    consumer.subscribe(&[from])?;
    let producer = BulkProducer::new(bootstrap)?;
    let mut copied = 0;
    while copied < count {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result?;
        let mut record = BaseRecord::<[u8], [u8]>::to(to).payload(message.payload().unwrap_or(&[]));
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        loop {
            match producer.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.producer.poll(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        copied += 1;
        if copied % 1024 == 0 {
            producer.poll();
        }
    }
    producer.flush()?;
    consumer.commit_consumer_state(CommitMode::Sync)?;
    Ok(())
}

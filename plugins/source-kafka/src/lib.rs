//! The `kafka` source: consumes topics as a member of a consumer group and commits an offset
//! only once every sink has delivered the messages before it.
//!
//! Each message becomes one event whose message is the payload, with the fields `topic`,
//! `partition`, `offset`, `key` and `headers.<name>`, and the message's timestamp. The event's
//! stream (and so, by default, its `deepsentry` session) is the message key.
//!
//! Offsets: automatic offset *storing* is off. When a batch is acknowledged by every sink, the
//! offsets of its messages are stored, and librdkafka commits stored offsets every
//! `commit_interval_ms`, on shutdown and before partitions are revoked. Before a revocation
//! the source waits (up to `drain_timeout_ms`) for the batches still in flight from those
//! partitions, so the next owner starts right after what this instance delivered. A crash
//! re-delivers what was not yet committed: at-least-once.

mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deepsentry_core::ack::ordered_acks;
use deepsentry_core::decode::{decode_and_date, Decoding};
use deepsentry_core::event::{Fields, Value};
use deepsentry_core::lines::DEFAULT_MAX_LINE_BYTES;
use deepsentry_core::metrics::Counter;
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::timestamp::EventTime;
use deepsentry_core::{
    Batch, BuildContext, Event, Origin, Source, SourceConfig, SourceContext, MAX_BATCH_EVENTS,
};
use deepsentry_kafka::{client_config, KafkaLog};
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::consumer::{MessageStream, StreamConsumer};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::TopicPartitionList;
use serde::Deserialize;

use offsets::{BatchOffsets, OffsetBook};

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    /// The oldest message still in the topic.
    Earliest,
    /// Only messages produced from now on (the default, as in Kafka).
    #[default]
    Latest,
}

impl AutoOffsetReset {
    fn as_str(self) -> &'static str {
        match self {
            AutoOffsetReset::Earliest => "earliest",
            AutoOffsetReset::Latest => "latest",
        }
    }
}

/// What names an event's stream, which is the `deepsentry` transform's default session.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionFrom {
    /// The message key (the default); messages without a key fall back to `partition`.
    #[default]
    Key,
    /// The topic and partition (`topic/3`).
    Partition,
}

/// Settings of the `kafka` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Topics to subscribe to (a name starting with `^` is a regex).
    pub topics: Vec<String>,
    /// The consumer group. Instances with the same group split the partitions between them.
    pub group_id: String,
    /// `earliest` or `latest` (default): where to start without a committed offset.
    #[serde(default)]
    pub auto_offset_reset: AutoOffsetReset,
    /// `key` (default) or `partition`: what an event's stream (its default session) is.
    #[serde(default)]
    pub session_key: SessionFrom,
    /// How often acknowledged offsets are committed, in milliseconds. Default 1000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// How long a rebalance waits for in-flight messages of revoked partitions to be
    /// delivered before it lets them go (their next owner then reads them again), in
    /// milliseconds. Default 5000.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Payloads longer than this many bytes are truncated (and counted). Default 102400.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How each payload is decoded: `text` (default), `json`, `logfmt` or `syslog`.
    #[serde(default)]
    pub decoding: Decoding,
    /// The decoded field holding the message. Default: the first of `message`, `msg`, `log`.
    #[serde(default)]
    pub message_field: Option<String>,
    /// Where an event's time comes from: `auto` (default: a decoded time field, else a
    /// timestamp leading the payload, else the message's Kafka timestamp) or `arrival` (the
    /// Kafka timestamp always).
    #[serde(default)]
    pub timestamp: EventTime,
    /// Any librdkafka consumer property (`session.timeout.ms`, `security.protocol`, ...);
    /// these win over the settings above.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

fn default_commit_interval_ms() -> u64 {
    1000
}

fn default_drain_timeout_ms() -> u64 {
    5000
}

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

deepsentry_core::register_source!(
    "kafka",
    "Consumes Kafka topics in a consumer group; commits offsets of delivered events only",
    KafkaSourceConfig
);

/// rdkafka's consumer context, i.e. its callbacks: librdkafka's log lines, and the offset book
/// that rebalances drain.
struct ConsumerCallbacks {
    log: KafkaLog,
    id: String,
    offsets: OffsetBook,
    drain_timeout: Duration,
}

deepsentry_kafka::impl_client_context!(ConsumerCallbacks);

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                let revoked = partition_names(partitions);
                // Blocking here holds up this worker thread: let the runtime move its other
                // tasks elsewhere while the sinks finish the revoked partitions' batches.
                let drain = || {
                    self.offsets
                        .drain_revoked(partitions, self.drain_timeout, consumer)
                };
                let left = match tokio::runtime::Handle::try_current() {
                    Ok(handle)
                        if handle.runtime_flavor()
                            == tokio::runtime::RuntimeFlavor::MultiThread =>
                    {
                        tokio::task::block_in_place(drain)
                    }
                    _ => drain(),
                };
                if left > 0 {
                    tracing::warn!(
                        source = %self.id,
                        events = left,
                        "partitions revoked with events still in flight; their next owner \
                         reads them again"
                    );
                }
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    // Nothing stored yet for these partitions is not an error worth a warning.
                    tracing::debug!(source = %self.id, "commit before revocation: {e}");
                }
                tracing::info!(source = %self.id, partitions = %revoked, "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::error!(source = %self.id, "rebalance failed: {e}"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(
                source = %self.id,
                partitions = %partition_names(partitions),
                "partitions assigned"
            );
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // `NoOffset`: nothing new to commit since the last time.
            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                tracing::warn!(
                    source = %self.id,
                    partitions = %partition_names(offsets),
                    "offset commit failed: {e}"
                );
            }
        }
    }
}

fn partition_names(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// A built `kafka` source.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<ConsumerCallbacks>>,
    config: KafkaSourceConfig,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaSourceConfig {
    /// The consumer's librdkafka settings, after checking the source's own.
    fn client_config(&self) -> anyhow::Result<rdkafka::ClientConfig> {
        anyhow::ensure!(
            !self.topics.is_empty(),
            "`topics` is empty; name at least one"
        );
        anyhow::ensure!(!self.group_id.is_empty(), "`group_id` is empty");
        let commit_interval = self.commit_interval_ms.max(1).to_string();
        Ok(client_config(
            &self.bootstrap_servers,
            &[
                ("group.id", &self.group_id),
                ("auto.offset.reset", self.auto_offset_reset.as_str()),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", &commit_interval),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
            ],
            &self.librdkafka_options,
        ))
    }
}

#[async_trait]
impl SourceConfig for KafkaSourceConfig {
    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        // Sets every option the way a consumer would, without starting one.
        self.client_config()?
            .create_native_config()
            .context("`librdkafka_options`")?;
        Ok(())
    }

    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        let config = self.client_config()?;
        let context = ConsumerCallbacks {
            log: KafkaLog::new(&cx.id, &self.bootstrap_servers),
            id: cx.id.clone(),
            offsets: OffsetBook::default(),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        };
        let consumer: StreamConsumer<ConsumerCallbacks> = config
            .create_with_context(context)
            .context("cannot create the Kafka consumer (check `librdkafka_options`)")?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .context("cannot subscribe to `topics`")?;
        Ok(Box::new(KafkaSource {
            consumer: Arc::new(consumer),
            config: self.clone(),
        }))
    }
}

/// Turns Kafka messages into events, reusing one [`Origin`] per stream.
struct EventMaker {
    source_id: Arc<str>,
    session_from: SessionFrom,
    max_bytes: usize,
    origins: HashMap<Vec<u8>, Arc<Origin>>,
    truncated: Counter,
    invalid_utf8: Counter,
    null_payloads: Counter,
    decoding: Decoding,
    message_field: Option<String>,
    time: EventTime,
    decode_failed: Counter,
    /// Payloads that do not decode are said at most every 10 s.
    decode_warnings: LogRateLimit,
}

/// Streams remembered for reuse; past this the cache starts over (bounded memory with any
/// number of keys).
const MAX_CACHED_ORIGINS: usize = 65_536;

impl EventMaker {
    fn origin(&mut self, message: &BorrowedMessage<'_>) -> Arc<Origin> {
        let partition_stream = || format!("{}/{}", message.topic(), message.partition());
        let partition_name;
        let stream: &[u8] = match (self.session_from, message.key()) {
            (SessionFrom::Key, Some(key)) => key,
            _ => {
                partition_name = partition_stream();
                partition_name.as_bytes()
            }
        };
        if let Some(origin) = self.origins.get(stream) {
            return origin.clone();
        }
        if self.origins.len() >= MAX_CACHED_ORIGINS {
            self.origins.clear();
        }
        let origin = Origin::new(
            self.source_id.clone(),
            String::from_utf8_lossy(stream).as_ref(),
        );
        self.origins.insert(stream.to_vec(), origin.clone());
        origin
    }

    /// The event for `message`, or `None` for a message without payload (a tombstone).
    fn make(&mut self, message: &BorrowedMessage<'_>) -> Option<Event> {
        let Some(payload) = message.payload() else {
            self.null_payloads.inc();
            return None;
        };
        let mut line = payload.strip_suffix(b"\n").unwrap_or(payload);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_bytes {
            line = &line[..self.max_bytes];
            self.truncated.inc();
        }
        let timestamp = message
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        let origin = self.origin(message);
        let (mut event, lossy) = Event::from_bytes(Bytes::copy_from_slice(line), timestamp, origin);
        if lossy {
            self.invalid_utf8.inc();
        }
        event.fields = message_fields(message);
        // The event's own time wins over the message's Kafka timestamp.
        if let Err(why) = decode_and_date(
            &mut event,
            self.decoding,
            self.message_field.as_deref(),
            self.time,
            timestamp,
        ) {
            self.decode_failed.inc();
            if let Some(held_back) = self.decode_warnings.check() {
                tracing::warn!(
                    source = %self.source_id,
                    topic = message.topic(),
                    decoding = ?self.decoding,
                    earlier_warnings_not_logged = held_back,
                    "a payload did not decode ({why}); passed on as text (counted in \
                     lines_modified{{reason=decode_failed}})"
                );
            }
        }
        Some(event)
    }
}

/// The fields describing where a message came from.
fn message_fields(message: &BorrowedMessage<'_>) -> Fields {
    let mut fields = Fields::default();
    fields.insert("topic", Value::Str(message.topic().to_owned()));
    fields.insert("partition", Value::Int(message.partition().into()));
    fields.insert("offset", Value::Int(message.offset()));
    if let Some(key) = message.key() {
        fields.insert("key", Value::Str(String::from_utf8_lossy(key).into_owned()));
    }
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            fields.insert(
                format!("headers.{}", header.key),
                Value::Str(value.into_owned()),
            );
        }
    }
    fields
}

/// Events read in one go and the offsets behind them.
struct Collected {
    events: Vec<Event>,
    offsets: BatchOffsets,
}

/// Builds a batch from `first` and whatever librdkafka has already fetched, without waiting.
/// Synchronous on purpose: a `BorrowedMessage` must not live across an `.await`.
fn collect_batch<'c>(
    first: KafkaResult<BorrowedMessage<'c>>,
    messages: &mut MessageStream<'c, ConsumerCallbacks>,
    maker: &mut EventMaker,
    errors: &Counter,
    id: &str,
) -> Collected {
    let mut batch = Collected {
        events: Vec::new(),
        offsets: BatchOffsets::default(),
    };
    let mut next = Some(first);
    while let Some(result) = next.take() {
        match result {
            Ok(message) => {
                batch
                    .offsets
                    .record(message.topic(), message.partition(), message.offset());
                batch.events.extend(maker.make(&message));
            }
            Err(e) => {
                errors.inc();
                // Connection trouble is also reported, once and in words, by `KafkaLog::error`.
                let connection = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown
                    )
                );
                if connection {
                    tracing::debug!(source = %id, "Kafka consumer error: {e}");
                } else {
                    tracing::warn!(source = %id, "Kafka consumer error: {e}");
                }
                break;
            }
        }
        if batch.offsets.messages() < MAX_BATCH_EVENTS {
            next = messages.next().now_or_never().flatten();
        }
    }
    batch
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> anyhow::Result<()> {
        let consumer = self.consumer;
        let (registrar, acks) = ordered_acks::<BatchOffsets>();
        consumer
            .context()
            .offsets
            .attach(acks, cx.metrics.clone(), &cx.id);
        // Stores acknowledged offsets as they come in; librdkafka commits them.
        let storing = {
            let consumer = consumer.clone();
            tokio::spawn(async move {
                loop {
                    let done = consumer.context().offsets.apply_ready(&*consumer);
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let mut maker = EventMaker {
            source_id: Arc::from(cx.id.as_str()),
            session_from: self.config.session_key,
            max_bytes: self.config.max_message_bytes.max(1),
            origins: HashMap::new(),
            truncated: cx
                .metrics
                .counter_with_reason("lines_modified", "truncated"),
            invalid_utf8: cx
                .metrics
                .counter_with_reason("lines_modified", "invalid_utf8"),
            null_payloads: cx
                .metrics
                .counter_with_reason("messages_skipped", "null_payload"),
            decoding: self.config.decoding,
            message_field: self.config.message_field.clone(),
            time: self.config.timestamp,
            decode_failed: cx
                .metrics
                .counter_with_reason("lines_modified", "decode_failed"),
            decode_warnings: LogRateLimit::new(Duration::from_secs(10)),
        };
        let received = cx.metrics.counter("events_received");
        let bytes = cx.metrics.counter("bytes_received");
        let errors = cx.metrics.counter("consumer_errors");
        // One stream for the whole run: each `recv` would register and unregister a waker.
        let mut messages = consumer.stream();
        loop {
            let batch = tokio::select! {
                _ = cx.shutdown.wait() => break,
                first = messages.next() => match first {
                    Some(first) => collect_batch(first, &mut messages, &mut maker, &errors, &cx.id),
                    None => break,
                },
            };
            if batch.offsets.messages() == 0 {
                continue;
            }
            received.add(batch.events.len() as u64);
            bytes.add(
                batch
                    .events
                    .iter()
                    .map(|e| e.message_bytes().len() as u64)
                    .sum(),
            );
            consumer.context().offsets.sent(&batch.offsets);
            let token = registrar.register(batch.offsets);
            if cx
                .out
                .send(Batch::with_ack(batch.events, token))
                .await
                .is_err()
            {
                break;
            }
        }
        // Let the last acknowledgements arrive, store them and commit before leaving the group.
        drop(messages);
        drop(registrar);
        storing.await.context("offset task panicked")?;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!(source = %cx.id, "offsets committed"),
            Err(e) => tracing::debug!(source = %cx.id, "final commit: {e}"),
        }
        consumer.unsubscribe();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_choices() {
        let config: KafkaSourceConfig =
            serde_yaml::from_str("bootstrap_servers: k:9092\ntopics: [logs]\ngroup_id: g\n")
                .unwrap();
        assert_eq!(config.auto_offset_reset, AutoOffsetReset::Latest);
        assert_eq!(config.session_key, SessionFrom::Key);
        assert_eq!(config.commit_interval_ms, 1000);
        let err = serde_yaml::from_str::<KafkaSourceConfig>(
            "bootstrap_servers: k\ntopics: [t]\ngroup_id: g\nauto_offset_reset: first\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("expected `earliest` or `latest`"),
            "{err}"
        );
        let err = serde_yaml::from_str::<KafkaSourceConfig>(
            "bootstrap_servers: k\ntopics: [t]\ngroup_id: g\ngroup: x\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `group`"), "{err}");
    }
}

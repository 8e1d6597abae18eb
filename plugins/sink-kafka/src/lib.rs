//! The `kafka` sink: produces each event as one message, and acknowledges a batch once
//! librdkafka has reported the delivery of every message in it.
//!
//! Messages are handed to librdkafka's queue without waiting for each delivery (a background
//! thread serves the delivery reports), so thousands are in flight at once. A full queue makes
//! the sink wait, which holds the pipeline back; nothing is dropped for lack of room.
//! Defaults are the safe ones: `acks=all`, idempotence on, and no local delivery timeout
//! (`message.timeout.ms=0`), so a broker that is down stalls the pipeline instead of losing
//! events. A message the broker refuses for good (too large, no such topic, not authorized) is
//! counted in `events_dropped{reason=delivery_failed}`, logged, and its batch reported failed
//! to the source.

mod template;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::codec::{encode, Encoding, EncodingConfig, SinkEncodings};
use deepsentry_core::metrics::Counter;
use deepsentry_core::{AckToken, Batch, BuildContext, Event, Sink, SinkConfig, SinkContext};
use deepsentry_kafka::{client_config, KafkaLog};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Deserialize;
use tokio::sync::Notify;

pub use template::Template;

/// What each message's payload holds: a JSON object with the timestamp, message, source,
/// stream and every field (the default, so enrichment travels with the line), the raw
/// message, or the live monitor's line.
pub struct KafkaEncodings;

impl SinkEncodings for KafkaEncodings {
    const SUPPORTED: &'static [Encoding] = &[Encoding::Json, Encoding::Text, Encoding::Monitor];
    const DEFAULT: Encoding = Encoding::Json;
}

/// Compression of the produced batches.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression (the default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Settings of the `kafka` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// The topic; `{{ field }}` is replaced by the event's field (`logs-{{ topic }}`).
    pub topic: String,
    /// The field whose value becomes the message key (`key` keeps a Kafka source's key,
    /// `session` the detector's session). Default: no key.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Fields sent as headers, named after the field. Fields named `headers.<name>` (from a
    /// Kafka source) are always sent, as header `<name>`.
    #[serde(default)]
    pub header_fields: Vec<String>,
    /// `json` (default), `text` or `monitor`.
    #[serde(default)]
    pub encoding: EncodingConfig<KafkaEncodings>,
    /// `none` (default), `gzip`, `snappy` or `lz4`.
    #[serde(default)]
    pub compression: Compression,
    /// Any librdkafka producer property (`linger.ms`, `message.timeout.ms`, ...); these win
    /// over the settings above and the defaults.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
}

deepsentry_core::register_sink!(
    "kafka",
    "Produces events to a Kafka topic (templated); acknowledges on delivery reports",
    KafkaSinkConfig
);

/// The delivery state of one batch: it is acknowledged when its last message is reported.
struct BatchDelivery {
    /// Messages not yet reported, plus one while the batch is still being queued.
    remaining: AtomicUsize,
    failed: AtomicBool,
    acks: Mutex<Vec<AckToken>>,
}

impl BatchDelivery {
    fn new(acks: Vec<AckToken>) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            acks: Mutex::new(acks),
        })
    }

    /// Counts one message reported (or given up on); the last one releases the batch's
    /// acknowledgements, failed if any message failed.
    fn done_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let acks = std::mem::take(&mut *self.acks.lock().expect("acks lock poisoned"));
            if self.failed.load(Ordering::Acquire) {
                acks.iter().for_each(AckToken::fail);
            } else {
                acks.iter().for_each(AckToken::done);
            }
        }
    }

    /// Marks the batch failed; returns whether it is the first failure (the one to log).
    fn fail(&self) -> bool {
        !self.failed.swap(true, Ordering::AcqRel)
    }
}

/// The producer's context: logging, delivery reports and the wake-up for a full queue.
struct DeliveryTracker {
    log: KafkaLog,
    id: String,
    delivered: Counter,
    failed: Counter,
    /// Messages queued and not yet reported.
    outstanding: AtomicUsize,
    /// While the sink waits for room: wake it once `outstanding` is at most this.
    resume_below: AtomicUsize,
    /// Wakes the sink waiting for room in librdkafka's queue.
    room: Notify,
}

deepsentry_kafka::impl_client_context!(DeliveryTracker);

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = Arc<BatchDelivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchDelivery>) {
        match result {
            Ok(_) => self.delivered.inc(),
            Err((error, _)) => {
                self.failed.inc();
                if batch.fail() {
                    tracing::error!(
                        sink = %self.id,
                        "Kafka refused a message for good: {error}; counted in \
                         events_dropped{{reason=delivery_failed}}"
                    );
                }
            }
        }
        batch.done_one();
        let left = self.outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
        if left <= self.resume_below.load(Ordering::Acquire) {
            self.room.notify_one();
        }
    }
}

/// A built `kafka` sink.
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryTracker>,
    config: KafkaSinkConfig,
    topic: Template,
    dropped_template: Counter,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaSinkConfig {
    /// The producer's librdkafka settings.
    fn client_config(&self) -> rdkafka::ClientConfig {
        client_config(
            &self.bootstrap_servers,
            &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "0"),
                ("linger.ms", "5"),
                ("compression.type", self.compression.as_str()),
            ],
            &self.librdkafka_options,
        )
    }
}

#[async_trait]
impl SinkConfig for KafkaSinkConfig {
    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        Template::parse(&self.topic).context("`topic`")?;
        // Sets every option the way a producer would, without starting one.
        self.client_config()
            .create_native_config()
            .context("`librdkafka_options`")?;
        Ok(())
    }

    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        let topic = Template::parse(&self.topic).context("`topic`")?;
        let config = self.client_config();
        let metrics = cx.component_metrics();
        let tracker = DeliveryTracker {
            log: KafkaLog::new(&cx.id, &self.bootstrap_servers),
            id: cx.id.clone(),
            delivered: metrics.counter("events_delivered"),
            failed: metrics.dropped("delivery_failed"),
            outstanding: AtomicUsize::new(0),
            resume_below: AtomicUsize::new(usize::MAX),
            room: Notify::new(),
        };
        let producer: ThreadedProducer<DeliveryTracker> = config
            .create_with_context(tracker)
            .context("cannot create the Kafka producer (check `librdkafka_options`)")?;
        Ok(Box::new(KafkaSink {
            producer,
            config: self.clone(),
            topic,
            dropped_template: metrics.dropped("topic_template"),
        }))
    }
}

/// The header name for a field: `headers.x` is header `x`, any other field keeps its name.
fn header_name(field: &str) -> &str {
    field.strip_prefix("headers.").unwrap_or(field)
}

impl KafkaSink {
    fn headers(&self, event: &Event) -> Option<OwnedHeaders> {
        let mut headers: Option<OwnedHeaders> = None;
        for (name, value) in event.fields.iter() {
            let listed = self.config.header_fields.iter().any(|f| f == name);
            if !listed && !name.starts_with("headers.") {
                continue;
            }
            let value = value.to_string();
            headers = Some(headers.unwrap_or_default().insert(Header {
                key: header_name(name),
                value: Some(value.as_bytes()),
            }));
        }
        headers
    }

    /// Queues one message, waiting while librdkafka's queue is full. Returns the error of a
    /// message librdkafka refuses outright.
    async fn enqueue(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        delivery: &Arc<BatchDelivery>,
    ) -> Result<(), KafkaError> {
        let mut record =
            BaseRecord::<str, [u8], Arc<BatchDelivery>>::with_opaque_to(topic, delivery.clone())
                .payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        // Counted before the send: its delivery report may come before `send` returns.
        let tracker = self.producer.context();
        delivery.remaining.fetch_add(1, Ordering::AcqRel);
        tracker.outstanding.fetch_add(1, Ordering::AcqRel);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.wait_for_room().await;
                }
                Err((error, _)) => {
                    delivery.remaining.fetch_sub(1, Ordering::AcqRel);
                    tracker.outstanding.fetch_sub(1, Ordering::AcqRel);
                    return Err(error);
                }
            }
        }
    }

    /// Backpressure: waits until librdkafka's queue, found full, has drained by a tenth.
    /// Resuming at the first free slot would wake this task once per delivery report.
    async fn wait_for_room(&self) {
        let tracker = self.producer.context();
        let full = tracker.outstanding.load(Ordering::Acquire);
        let resume_below = full - full / 10;
        tracker.resume_below.store(resume_below, Ordering::Release);
        loop {
            let room = tracker.room.notified();
            if tracker.outstanding.load(Ordering::Acquire) <= resume_below {
                break;
            }
            // The timeout covers a report that came between the check and the wait.
            let _ = tokio::time::timeout(Duration::from_millis(50), room).await;
        }
        tracker.resume_below.store(usize::MAX, Ordering::Release);
    }

    /// Queues every event of `batch`; its acknowledgement follows the delivery reports.
    async fn send_batch(&self, mut batch: Batch, cx: &SinkContext, buf: &mut Vec<u8>) {
        let encoding = self.config.encoding.get();
        let delivery = BatchDelivery::new(batch.take_acks());
        let mut topic = String::new();
        let mut key_buf = String::new();
        for event in &batch.events {
            topic.clear();
            if let Err(missing) = self.topic.render(event, &mut topic) {
                self.dropped_template.inc();
                if delivery.fail() {
                    tracing::error!(
                        sink = %cx.id,
                        "event has no field `{missing}` for the topic template; dropped \
                         (counted in events_dropped{{reason=topic_template}})"
                    );
                }
                continue;
            }
            buf.clear();
            encode(encoding, event, buf);
            // The codec ends each event with a newline; a Kafka message needs none.
            let payload = buf.strip_suffix(b"\n").unwrap_or(buf);
            let key = self
                .config
                .key_field
                .as_deref()
                .and_then(|field| event.fields.get(field))
                .map(|value| {
                    key_buf.clear();
                    let _ = write!(key_buf, "{value}");
                    key_buf.as_str()
                });
            let headers = self.headers(event);
            if let Err(e) = self.enqueue(&topic, key, payload, headers, &delivery).await {
                self.producer.context().failed.inc();
                if delivery.fail() {
                    tracing::error!(sink = %cx.id, %topic, "Kafka refused a message: {e}");
                }
            }
        }
        // Release the guard taken in `BatchDelivery::new`.
        delivery.done_one();
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn run(self: Box<Self>, mut cx: SinkContext) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        while let Some(batch) = cx.input.recv().await {
            self.send_batch(batch, &cx, &mut buf).await;
        }
        // Input closed: wait for the delivery reports of everything still queued.
        let mut next_report = Instant::now() + Duration::from_secs(5);
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= next_report {
                tracing::info!(
                    sink = %cx.id,
                    in_flight = self.producer.in_flight_count(),
                    "waiting for Kafka to acknowledge the last messages"
                );
                next_report += Duration::from_secs(10);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_choices() {
        let config: KafkaSinkConfig =
            serde_yaml::from_str("bootstrap_servers: k:9092\ntopic: out\n").unwrap();
        assert_eq!(config.encoding.get(), Encoding::Json);
        assert_eq!(config.compression, Compression::None);
        assert!(config.key_field.is_none());
        let err = serde_yaml::from_str::<KafkaSinkConfig>(
            "bootstrap_servers: k\ntopic: t\ncompression: brotli\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`none`, `gzip`, `snappy`, `lz4`"),
            "{err}"
        );
    }

    #[test]
    fn header_names_drop_the_source_prefix() {
        assert_eq!(header_name("headers.trace_id"), "trace_id");
        assert_eq!(header_name("session"), "session");
    }

    #[test]
    fn a_batch_is_acknowledged_after_its_last_message() {
        let (token, mut ack) = AckToken::new();
        let delivery = BatchDelivery::new(vec![token]);
        delivery.remaining.fetch_add(2, Ordering::AcqRel);
        delivery.done_one();
        delivery.done_one();
        assert!(ack.try_recv().is_err(), "the queuing guard is still held");
        delivery.done_one();
        assert_eq!(
            ack.try_recv().unwrap(),
            deepsentry_core::AckStatus::Delivered
        );
    }

    #[test]
    fn one_failed_message_fails_the_batch() {
        let (token, mut ack) = AckToken::new();
        let delivery = BatchDelivery::new(vec![token]);
        delivery.remaining.fetch_add(1, Ordering::AcqRel);
        assert!(delivery.fail());
        assert!(!delivery.fail(), "only the first failure is logged");
        delivery.done_one();
        delivery.done_one();
        assert_eq!(ack.try_recv().unwrap(), deepsentry_core::AckStatus::Failed);
    }
}

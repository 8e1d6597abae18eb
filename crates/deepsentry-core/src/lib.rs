//! The DeepSentry engine.
//!
//! Everything a pipeline needs except the plugins themselves: the [`Event`] that flows through
//! it, [`Batch`]es with end-to-end [acknowledgements](ack), the [plugin registry](registry) that
//! finds components by their `type:` name, [config] loading and validation, the [topology] that
//! wires sources, transforms and sinks with bounded channels, line [framing], output
//! [codec]s, [checkpoint]s and [metrics].
//!
//! The core never names a plugin: plugins register themselves with [`register_source!`],
//! [`register_transform!`] and [`register_sink!`], and the binary links them in. What it
//! knows of the anomaly detector is the fields the detector adds to events ([`anomaly`]),
//! which its encoders (the monitor and alert lines, syslog's structured data) read.

pub mod ack;
pub mod anomaly;
pub mod backoff;
pub mod batch;
pub mod checkpoint;
pub mod codec;
pub mod component;
pub mod config;
pub mod decode;
pub mod event;
pub mod framing;
pub mod hash;
pub mod health;
pub mod input;
pub mod lines;
pub mod metrics;
pub mod multiline;
pub mod net;
pub mod output;
pub mod ratelimit;
pub mod registry;
pub mod rng;
pub mod shutdown;
pub mod syslog;
pub mod timestamp;
pub mod topology;

pub use ack::{AckStatus, AckToken};
pub use batch::Batch;
pub use component::{
    BuildContext, Sink, SinkConfig, SinkContext, Source, SourceConfig, SourceContext, Transform,
    TransformConfig, TransformContext,
};
pub use event::{Event, Origin, Value};
pub use output::Output;
pub use shutdown::ShutdownSignal;

/// Re-exported for the registration macros, so plugin crates need no direct dependency.
#[doc(hidden)]
pub use inventory;

/// How many batches a channel between two components holds before the sender waits
/// (backpressure). Small, because each batch already holds up to a thousand or so events.
pub const CHANNEL_CAPACITY: usize = 16;

/// The largest number of events a source puts in one batch.
pub const MAX_BATCH_EVENTS: usize = 1024;

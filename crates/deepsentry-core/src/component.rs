//! The three kinds of component and what each is handed when it is built and run.
//!
//! A plugin provides a config struct implementing [`SourceConfig`], [`TransformConfig`] or
//! [`SinkConfig`]. Building (binding a socket, opening a model) happens before any data flows so
//! that a bad setting stops the pipeline at start-up; running is a task that ends when its work
//! is done: a source on end of input or on shutdown, a transform or sink when its input closes.

use std::fmt::Debug;
use std::path::PathBuf;

use crate::input::Input;
use crate::metrics::{ComponentMetrics, Metrics};
use crate::output::Output;
use crate::shutdown::ShutdownSignal;
use async_trait::async_trait;

/// What every component's build step may use.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The component's id in the config.
    pub id: String,
    /// The pipeline's `data_dir`, for state such as checkpoints. A component that uses it keeps
    /// its files under `data_dir/<id>/`.
    pub data_dir: PathBuf,
    /// The process-wide metrics registry.
    pub metrics: Metrics,
}

impl BuildContext {
    /// The component's own counters.
    pub fn component_metrics(&self) -> ComponentMetrics {
        self.metrics.component(&self.id)
    }
}

/// A source's parsed config: builds the running source.
#[async_trait]
pub trait SourceConfig: Debug + Send + Sync {
    /// Validates what needs the outside world (binds sockets, checks paths) and returns the
    /// source ready to run.
    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Source>>;

    /// Refuses what [`build`](Self::build) would refuse, without its side effects: no socket
    /// opened, no file created, no client started (`deepsentry validate`).
    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()>;
}

/// What a running source gets; a clone serves one of its connections.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The source's id.
    pub id: String,
    /// Where its batches go.
    pub out: Output,
    /// Fires when the pipeline should stop.
    pub shutdown: ShutdownSignal,
    /// The source's counters.
    pub metrics: ComponentMetrics,
}

/// A running source.
#[async_trait]
pub trait Source: Send {
    /// Reads until end of input or shutdown, sending batches to `cx.out`.
    async fn run(self: Box<Self>, cx: SourceContext) -> anyhow::Result<()>;
}

/// A transform's parsed config.
#[async_trait]
pub trait TransformConfig: Debug + Send + Sync {
    /// Loads what the transform needs (a model) and returns it ready to run.
    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Transform>>;

    /// Refuses what [`build`](Self::build) would refuse (a model that does not load or does
    /// not match), creating nothing (`deepsentry validate`).
    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()>;

    /// A digest of what the transform loads from outside its settings (a model's files), or
    /// `None` when nothing. A reload rebuilds a transform whose settings are unchanged when
    /// this changes: a retrained model is picked up.
    fn fingerprint(&self) -> Option<String> {
        None
    }
}

/// What a running transform gets.
#[derive(Debug)]
pub struct TransformContext {
    /// The transform's id.
    pub id: String,
    /// Batches from every input, merged.
    pub input: Input,
    /// Where its batches go.
    pub out: Output,
    /// Fired when the pipeline is shutting down (the input then closes too); tells a
    /// transform holding state whether its input ended or the process is stopping.
    pub shutdown: ShutdownSignal,
    /// The transform's counters.
    pub metrics: ComponentMetrics,
}

/// A running transform.
#[async_trait]
pub trait Transform: Send {
    /// Processes batches until the input closes, then flushes what it holds and returns.
    async fn run(self: Box<Self>, cx: TransformContext) -> anyhow::Result<()>;
}

/// A sink's parsed config.
#[async_trait]
pub trait SinkConfig: Debug + Send + Sync {
    /// Opens what the sink writes to and returns it ready to run.
    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>>;

    /// Refuses what [`build`](Self::build) would refuse, without its side effects: no socket
    /// opened, no file created, no client started (`deepsentry validate`).
    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()>;
}

/// What a running sink gets.
#[derive(Debug)]
pub struct SinkContext {
    /// The sink's id.
    pub id: String,
    /// Batches from every input, merged.
    pub input: Input,
    /// The sink's counters.
    pub metrics: ComponentMetrics,
}

/// A running sink. It delivers each batch, then settles it with
/// [`Batch::delivered`](crate::Batch::delivered), or with [`Batch::fail`](crate::Batch::fail)
/// when it gives up on it for good (counted and logged). A batch it drops unsettled (it
/// stopped with an error) is lost, and its source does not move past it.
#[async_trait]
pub trait Sink: Send {
    /// Delivers batches until the input closes, then flushes and returns.
    async fn run(self: Box<Self>, cx: SinkContext) -> anyhow::Result<()>;
}

//! The `file` source: tails files matched by globs, follows rotation, and keeps a checkpoint
//! per file that moves only once the sinks have delivered the lines before it.
//!
//! Reading happens on a blocking thread (plain `read` calls on the page cache are faster than
//! any async file API); checkpoints are kept by an async task that listens to the
//! acknowledgements of the batches, in order, and writes `data_dir/<id>/checkpoints.json`
//! atomically after each group of acknowledgements. A crash therefore re-reads at most the
//! batches that were in flight, and loses none.
//!
//! Files are identified by device and inode plus a hash of their first bytes, so a file renamed
//! away (`app.log` -> `app.log.1`) is read to its end while the new `app.log` is read from its
//! start, and a recycled inode is not mistaken for the old file.

mod checkpoints;
mod watcher;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::ack::{ordered_acks, AckStatus};
use deepsentry_core::decode::Decoding;
use deepsentry_core::lines::{LineSettings, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::multiline::MultilineConfig;
use deepsentry_core::timestamp::EventTime;
use deepsentry_core::{BuildContext, Source, SourceConfig, SourceContext};
use serde::Deserialize;

use checkpoints::Checkpoints;
use watcher::{FileWatcher, WatcherSettings};

/// Where to start reading a file seen for the first time at start-up.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// The whole file (the default).
    #[default]
    Beginning,
    /// Only lines appended from now on (the live monitor's `tail_mode: true`). Files that
    /// appear later, and files with a checkpoint, are read from their start or checkpoint.
    End,
}

/// Settings of the `file` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Paths or glob patterns of the files to read (`/var/log/app/*.log`).
    pub include: Vec<String>,
    /// Glob patterns of paths to skip, e.g. rotated copies (`/var/log/app/*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `beginning` (default) or `end`, for files without a checkpoint at start-up.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Lines longer than this many bytes are truncated (and counted). Default 102400.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Joins the lines of one event, such as a stack trace: a preset (`java`, `python`, `go`,
    /// `ruby`, `any`) or `{start_pattern, condition_pattern, mode, timeout_ms}`. Default: off.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// How each line (or joined event) is decoded: `text` (default), `json`, `logfmt` or
    /// `syslog` (RFC 5424 and 3164).
    #[serde(default)]
    pub decoding: Decoding,
    /// The decoded field holding the message. Default: the first of `message`, `msg`, `log`.
    #[serde(default)]
    pub message_field: Option<String>,
    /// Where an event's time comes from: `auto` (default: a decoded `timestamp`, `time`, `ts`
    /// or `@timestamp` field, else a timestamp leading the line, else arrival) or `arrival`.
    #[serde(default)]
    pub timestamp: EventTime,
    /// How often files at their end are checked for new data, in milliseconds. Default 100.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How often the patterns are re-expanded to find new files, in milliseconds. Default 1000.
    #[serde(default = "default_glob_interval_ms")]
    pub glob_interval_ms: u64,
    /// How long a file renamed or deleted away is still read for late writes, in seconds.
    /// Default 5.
    #[serde(default = "default_rotate_wait_secs")]
    pub rotate_wait_secs: f64,
    /// Stop when every file has been read to its end (replays, benchmarks). Default `false`.
    #[serde(default)]
    pub exit_on_eof: bool,
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

fn default_poll_interval_ms() -> u64 {
    100
}

fn default_glob_interval_ms() -> u64 {
    1000
}

fn default_rotate_wait_secs() -> f64 {
    5.0
}

deepsentry_core::register_source!(
    "file",
    "Tails files (globs), follows rotation, checkpoints only delivered lines",
    FileSourceConfig
);

/// A built `file` source.
#[derive(Debug)]
pub struct FileSource {
    config: FileSourceConfig,
    patterns: Vec<glob::Pattern>,
    excludes: Vec<glob::Pattern>,
    checkpoint_path: PathBuf,
}

fn compile(patterns: &[String], key: &str) -> anyhow::Result<Vec<glob::Pattern>> {
    patterns
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("`{key}`: bad glob pattern `{p}`")))
        .collect()
}

impl FileSourceConfig {
    /// The compiled `include` and `exclude` patterns, and every other setting checked.
    fn patterns(&self) -> anyhow::Result<(Vec<glob::Pattern>, Vec<glob::Pattern>)> {
        anyhow::ensure!(
            !self.include.is_empty(),
            "`include` is empty; name at least one file or pattern"
        );
        anyhow::ensure!(
            self.rotate_wait_secs.is_finite() && self.rotate_wait_secs >= 0.0,
            "`rotate_wait_secs` must be a number of seconds, not {}",
            self.rotate_wait_secs
        );
        Ok((
            compile(&self.include, "include")?,
            compile(&self.exclude, "exclude")?,
        ))
    }
}

#[async_trait]
impl SourceConfig for FileSourceConfig {
    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        self.patterns().map(drop)
    }

    async fn build(&self, cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        let (patterns, excludes) = self.patterns()?;
        let dir = cx.data_dir.join(&cx.id);
        deepsentry_core::checkpoint::private_dir(&dir)?;
        Ok(Box::new(FileSource {
            config: self.clone(),
            patterns,
            excludes,
            checkpoint_path: dir.join("checkpoints.json"),
        }))
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> anyhow::Result<()> {
        let mut checkpoints = Checkpoints::load(&self.checkpoint_path)?;
        let (registrar, mut acks) = ordered_acks();
        let settings = WatcherSettings {
            source_id: cx.id.clone(),
            patterns: self.patterns,
            excludes: self.excludes,
            read_from: self.config.read_from,
            lines: LineSettings {
                max_line_bytes: self.config.max_line_bytes,
                multiline: self.config.multiline.clone(),
                decoding: self.config.decoding,
                message_field: self.config.message_field.clone(),
                timestamp: self.config.timestamp,
            },
            poll_interval: Duration::from_millis(self.config.poll_interval_ms.max(1)),
            glob_interval: Duration::from_millis(self.config.glob_interval_ms.max(1)),
            rotate_wait: Duration::from_secs_f64(self.config.rotate_wait_secs.max(0.0)),
            exit_on_eof: self.config.exit_on_eof,
        };
        let reader = FileWatcher::new(
            settings,
            checkpoints.snapshot(),
            registrar,
            cx.out,
            cx.shutdown.clone(),
            cx.metrics.clone(),
        );
        let reading = tokio::task::spawn_blocking(move || reader.run());

        let failed = cx.metrics.counter("events_not_delivered");
        let lost = cx.metrics.counter("events_lost_in_pipeline");
        // Files whose checkpoint must stay where it is: lines of theirs were lost on the way.
        let mut stalled: std::collections::HashSet<std::path::PathBuf> = Default::default();
        // Apply acknowledgements in order; save after each group that arrived together.
        while let Some(first) = acks.next().await {
            let mut next = Some(first);
            while let Some((status, update)) = next {
                next = acks.try_next();
                if status == AckStatus::Lost || stalled.contains(update.path()) {
                    lost.add(update.lines());
                    if stalled.insert(update.path().to_path_buf()) {
                        tracing::error!(
                            source = %cx.id,
                            file = %update.path().display(),
                            lines = update.lines(),
                            "lines were lost in the pipeline (a component stopped while holding \
                             them); this file's checkpoint stays where it is, so they and every \
                             later line are read again on the next start (counted in \
                             events_lost_in_pipeline)"
                        );
                    }
                    continue;
                }
                if status == AckStatus::Failed {
                    failed.add(update.lines());
                    tracing::error!(
                        source = %cx.id,
                        file = %update.path().display(),
                        lines = update.lines(),
                        "a sink gave up on these lines (see its error); they are not re-read"
                    );
                }
                checkpoints.apply(update);
            }
            if let Err(e) = checkpoints.save(false) {
                tracing::error!(source = %cx.id, "{e:#}");
            }
        }
        checkpoints.save(true)?;
        reading.await.context("file reader thread panicked")??;
        Ok(())
    }
}

//! The `file` sink: appends events to a file, flushed after every batch. Before each batch it
//! checks that its path still names the file it has open: once logrotate (or anyone) renamed
//! or removed it, the sink closes it and writes to a new file at the path, as Fluent Bit's and
//! Vector's file outputs do.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::backoff::Backoff;
use deepsentry_core::codec::{encode_batch, Encoding, EncodingConfig, SinkEncodings};
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::{BuildContext, Sink, SinkConfig, SinkContext};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// What the file sink writes: the raw message by default, JSON objects, the live monitor's
/// line, or the alert block (`TIMESTAMP=`, `SCORE=`, ..., for anomalies only).
pub struct FileEncodings;

impl SinkEncodings for FileEncodings {
    const SUPPORTED: &'static [Encoding] = &[
        Encoding::Text,
        Encoding::Json,
        Encoding::Monitor,
        Encoding::Alert,
    ];
    const DEFAULT: Encoding = Encoding::Text;
}

/// Settings of the `file` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to write; parent directories are created.
    pub path: PathBuf,
    /// Append to an existing file (default `true`); `false` truncates it at start.
    #[serde(default = "default_append")]
    pub append: bool,
    /// `text` (default), `json`, `monitor` or `alert`. `format`, its former name, is still
    /// read.
    #[serde(default, alias = "format")]
    pub encoding: EncodingConfig<FileEncodings>,
    /// How many times a failed write is retried (with a doubling pause from 100 ms) before the
    /// batch is dropped and counted. Default 5.
    #[serde(default = "default_write_retries")]
    pub write_retries: u32,
}

fn default_append() -> bool {
    true
}

fn default_write_retries() -> u32 {
    5
}

deepsentry_core::register_sink!(
    "file",
    "Appends events to a file (encodings: text, json, monitor, alert)",
    FileSinkConfig
);

/// A `file` sink with its file open.
#[derive(Debug)]
pub struct FileSink {
    config: FileSinkConfig,
    file: tokio::fs::File,
    /// Device and inode of the open file, to notice that the path now names another one.
    identity: (u64, u64),
}

async fn open(path: &Path, append: bool) -> anyhow::Result<(tokio::fs::File, (u64, u64))> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .await
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    let meta = file
        .metadata()
        .await
        .with_context(|| format!("cannot stat {}", path.display()))?;
    Ok((file, (meta.dev(), meta.ino())))
}

impl FileSink {
    /// Reopens the path when it no longer names the open file (renamed or removed by a
    /// rotation); the new file is appended to, whatever `append` says for the first one.
    async fn follow_rotation(&mut self, sink: &str) -> anyhow::Result<()> {
        let now = match tokio::fs::metadata(&self.config.path).await {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Unreadable for now: keep writing where we are; the write reports real trouble.
            Err(_) => return Ok(()),
        };
        if now == Some(self.identity) {
            return Ok(());
        }
        // What was written before the rotation stays in the renamed file, complete.
        self.file.sync_all().await.ok();
        let (file, identity) = open(&self.config.path, true).await?;
        self.file = file;
        self.identity = identity;
        tracing::info!(
            sink = %sink,
            path = %self.config.path.display(),
            "the file was rotated away; writing to a new file at its path"
        );
        Ok(())
    }
}

#[async_trait]
impl SinkConfig for FileSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
        let (file, identity) = open(&self.path, self.append).await?;
        Ok(Box::new(FileSink {
            config: self.clone(),
            file,
            identity,
        }))
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.path.as_os_str().is_empty(),
            "`path` is empty; name the file to write"
        );
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn run(mut self: Box<Self>, mut cx: SinkContext) -> anyhow::Result<()> {
        let delivered = cx.metrics.counter("events_delivered");
        let dropped = cx.metrics.dropped("write_failed");
        let encoding = self.config.encoding.get();
        let path = self.config.path.display().to_string();
        let mut buf = Vec::with_capacity(256 * 1024);
        // A disk that stays full fails every batch: say so every 10 s, not every batch.
        let (retry_log, drop_log) = (
            LogRateLimit::new(Duration::from_secs(10)),
            LogRateLimit::new(Duration::from_secs(10)),
        );
        while let Some(batch) = cx.input.recv().await {
            buf.clear();
            encode_batch(encoding, &batch, &mut buf);
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::MAX);
            let mut attempt = 0;
            loop {
                let result = async {
                    self.follow_rotation(&cx.id)
                        .await
                        .map_err(std::io::Error::other)?;
                    self.file.write_all(&buf).await?;
                    self.file.flush().await
                }
                .await;
                match result {
                    Ok(()) => {
                        delivered.add(batch.len() as u64);
                        batch.delivered();
                        break;
                    }
                    Err(e) if attempt < self.config.write_retries => {
                        attempt += 1;
                        let pause = backoff.next_delay();
                        if let Some(held_back) = retry_log.check() {
                            tracing::warn!(
                                sink = %cx.id,
                                %path,
                                earlier_warnings_not_logged = held_back,
                                "write failed ({e}); retry {attempt} in {pause:?}"
                            );
                        }
                        tokio::time::sleep(pause).await;
                    }
                    Err(e) => {
                        batch.fail();
                        dropped.add(batch.len() as u64);
                        if let Some(held_back) = drop_log.check() {
                            tracing::error!(
                                sink = %cx.id,
                                %path,
                                events = batch.len(),
                                earlier_drops_not_logged = held_back,
                                "write failed ({e}) after {attempt} retries; batch dropped and \
                                 counted in events_dropped{{reason=write_failed}}"
                            );
                        }
                        break;
                    }
                }
            }
        }
        self.file
            .sync_all()
            .await
            .with_context(|| format!("cannot fsync {path}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_valid_encodings() {
        let config: FileSinkConfig = serde_yaml::from_str("path: /tmp/x.log").unwrap();
        assert!(config.append);
        assert_eq!(config.encoding.get(), Encoding::Text);
        let config: FileSinkConfig = serde_yaml::from_str("path: x\nencoding: alert").unwrap();
        assert_eq!(config.encoding.get(), Encoding::Alert);
        let err = serde_yaml::from_str::<FileSinkConfig>("path: x\nencoding: csv").unwrap_err();
        assert!(err
            .to_string()
            .contains("`text`, `json`, `monitor`, `alert`"));
        let err = serde_yaml::from_str::<FileSinkConfig>("encoding: json").unwrap_err();
        assert!(err.to_string().contains("missing field `path`"));
    }
}

//! The `tcp` source: newline-delimited lines over TCP, either accepting connections
//! (`mode: server`) or connecting out and reconnecting with backoff (`mode: client`, what the
//! live monitor's `log_file: /dev/tcp/HOST/PORT` means).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::backoff::Backoff;
use deepsentry_core::decode::Decoding;
use deepsentry_core::framing::LineFramer;
use deepsentry_core::lines::{pump, LineDecoder, LineSettings, PumpEnd, DEFAULT_MAX_LINE_BYTES};
use deepsentry_core::metrics::ComponentMetrics;
use deepsentry_core::multiline::MultilineConfig;
use deepsentry_core::net::{check_host_port, serve_connections};
use deepsentry_core::output::Output;
use deepsentry_core::timestamp::EventTime;
use deepsentry_core::{BuildContext, Origin, ShutdownSignal, Source, SourceConfig, SourceContext};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

/// Whether the source listens or connects.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TcpMode {
    /// Listen on `address` and accept many clients (the default).
    #[default]
    Server,
    /// Connect to `address`, read, and reconnect with backoff whenever the connection ends.
    Client,
}

/// Settings of the `tcp` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSourceConfig {
    /// `server` (default) or `client`.
    #[serde(default)]
    pub mode: TcpMode,
    /// Server: the address to listen on (`0.0.0.0:9000`). Client: the peer (`localhost:9999`).
    pub address: String,
    /// Server: the most clients served at once; further clients wait in the listen backlog.
    /// Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
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
    /// Client: the longest pause between reconnection attempts, in seconds (the pause starts
    /// at 0.1 s and doubles). Default 30.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: f64,
    /// Server: a client that sends nothing for this many seconds is disconnected, so silent
    /// clients cannot hold every `max_connections` slot; 0 never disconnects. Default 300.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: f64,
}

fn default_idle_timeout_secs() -> f64 {
    300.0
}

fn default_max_connections() -> usize {
    256
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

fn default_reconnect_max_secs() -> f64 {
    30.0
}

deepsentry_core::register_source!(
    "tcp",
    "Reads lines from TCP: a server for many clients, or a reconnecting client",
    TcpSourceConfig
);

impl TcpSourceConfig {
    /// How each connection's lines become events.
    fn line_settings(&self) -> LineSettings {
        LineSettings {
            max_line_bytes: self.max_line_bytes,
            multiline: self.multiline.clone(),
            decoding: self.decoding,
            message_field: self.message_field.clone(),
            timestamp: self.timestamp,
        }
    }

    /// Every setting checked, without opening anything.
    fn checked_settings(&self) -> anyhow::Result<()> {
        check_host_port(&self.address)?;
        anyhow::ensure!(
            self.max_connections >= 1,
            "`max_connections` must be at least 1"
        );
        anyhow::ensure!(
            self.idle_timeout_secs.is_finite() && self.idle_timeout_secs >= 0.0,
            "`idle_timeout_secs` must be a number of seconds (0: never), not {}",
            self.idle_timeout_secs
        );
        anyhow::ensure!(
            self.reconnect_max_secs.is_finite() && self.reconnect_max_secs > 0.0,
            "`reconnect_max_secs` must be a positive number of seconds, not {}",
            self.reconnect_max_secs
        );
        Ok(())
    }
}

/// A built `tcp` source.
#[derive(Debug)]
pub enum TcpSource {
    /// Listening.
    Server(TcpSourceConfig, TcpListener),
    /// Will connect.
    Client(TcpSourceConfig),
}

#[async_trait]
impl SourceConfig for TcpSourceConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        self.checked_settings()?;
        Ok(Box::new(match self.mode {
            TcpMode::Server => {
                let listener = TcpListener::bind(&self.address)
                    .await
                    .with_context(|| format!("cannot listen on {}", self.address))?;
                TcpSource::Server(self.clone(), listener)
            }
            TcpMode::Client => TcpSource::Client(self.clone()),
        }))
    }

    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        self.checked_settings()
    }
}

#[async_trait]
impl Source for TcpSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> anyhow::Result<()> {
        match *self {
            TcpSource::Server(config, listener) => serve(config, listener, cx).await,
            TcpSource::Client(config) => connect_loop(config, cx).await,
        }
    }
}

/// A reader that fails with [`std::io::ErrorKind::TimedOut`] when nothing arrives for the
/// idle time.
struct IdleTimeout<R> {
    inner: R,
    idle: Option<Duration>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<R> IdleTimeout<R> {
    fn new(inner: R, idle: Option<Duration>) -> Self {
        let first = idle.unwrap_or(Duration::from_secs(3600));
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(first)),
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let Some(idle) = this.idle {
                    this.timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + idle);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle {
                Some(idle) if this.timer.as_mut().poll(cx).is_ready() => {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("nothing received for {} s", idle.as_secs_f64()),
                    )))
                }
                _ => Poll::Pending,
            },
        }
    }
}

/// Reads one connection to its end, sending its lines.
async fn read_connection(
    reader: IdleTimeout<TcpStream>,
    peer: String,
    config: &TcpSourceConfig,
    source_id: &str,
    metrics: &ComponentMetrics,
    mut out: Output,
    shutdown: ShutdownSignal,
) -> PumpEnd {
    let mut decoder = LineDecoder::new(
        Origin::new(source_id, peer.as_str()),
        metrics,
        &config.line_settings(),
    );
    let mut framer = LineFramer::new(config.max_line_bytes);
    match pump(reader, &mut framer, &mut decoder, &mut out, &shutdown).await {
        Ok(end) => end,
        // Nobody reads our output any more: treat like shutdown for this connection.
        Err(_) => PumpEnd::Shutdown,
    }
}

async fn serve(
    config: TcpSourceConfig,
    listener: TcpListener,
    cx: SourceContext,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let idle =
        (config.idle_timeout_secs > 0.0).then(|| Duration::from_secs_f64(config.idle_timeout_secs));
    tracing::info!(source = %cx.id, address = %config.address, "listening");
    serve_connections(
        listener,
        config.max_connections,
        cx,
        move |stream, peer, cx| {
            let config = config.clone();
            async move {
                let SourceContext {
                    id,
                    out,
                    shutdown,
                    metrics,
                } = cx;
                tracing::debug!(source = %id, %peer, "connection opened");
                let reader = IdleTimeout::new(stream, idle);
                let end =
                    read_connection(reader, peer.clone(), &config, &id, &metrics, out, shutdown)
                        .await;
                match end {
                    PumpEnd::ReadError(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        metrics
                            .counter_with_reason("connections_closed", "idle")
                            .inc();
                        tracing::info!(
                            source = %id,
                            %peer,
                            "disconnected an idle client ({e}; counted in \
                             connections_closed{{reason=idle}})"
                        );
                    }
                    PumpEnd::ReadError(e) => {
                        tracing::warn!(source = %id, %peer, "connection failed: {e}");
                    }
                    _ => {}
                }
            }
        },
    )
    .await;
    Ok(())
}

async fn connect_loop(config: TcpSourceConfig, cx: SourceContext) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs_f64(config.reconnect_max_secs.max(0.1)),
    );
    let connects = cx.metrics.counter("connections_established");
    let failures = cx.metrics.counter("connection_failures");
    loop {
        let connected = tokio::select! {
            _ = cx.shutdown.wait() => return Ok(()),
            connected = TcpStream::connect(&config.address) => connected,
        };
        match connected {
            Ok(stream) => {
                connects.inc();
                backoff.reset();
                tracing::info!(source = %cx.id, address = %config.address, "connected");
                // A server that is quiet for long is no reason to reconnect.
                let end = read_connection(
                    IdleTimeout::new(stream, None),
                    config.address.clone(),
                    &config,
                    &cx.id,
                    &cx.metrics,
                    cx.out.clone(),
                    cx.shutdown.clone(),
                )
                .await;
                match end {
                    PumpEnd::Shutdown => return Ok(()),
                    PumpEnd::Eof => {
                        tracing::info!(source = %cx.id, address = %config.address, "peer closed the connection; reconnecting")
                    }
                    PumpEnd::ReadError(e) => {
                        tracing::warn!(source = %cx.id, address = %config.address, "connection failed: {e}; reconnecting")
                    }
                }
                if !cx.out.is_connected() {
                    return Ok(());
                }
            }
            Err(e) => {
                failures.inc();
                let pause = backoff.next_delay();
                tracing::warn!(
                    source = %cx.id,
                    address = %config.address,
                    "cannot connect ({e}); retrying in {pause:?}"
                );
                tokio::select! {
                    _ = cx.shutdown.wait() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_defaults_to_server_and_address_is_required() {
        let config: TcpSourceConfig = serde_yaml::from_str("address: 127.0.0.1:9000").unwrap();
        assert_eq!(config.mode, TcpMode::Server);
        assert_eq!(config.max_connections, 256);
        let err = serde_yaml::from_str::<TcpSourceConfig>("mode: client").unwrap_err();
        assert!(err.to_string().contains("missing field `address`"));
        let err = serde_yaml::from_str::<TcpSourceConfig>("address: x\nmode: listen").unwrap_err();
        assert!(err.to_string().contains("expected `server` or `client`"));
    }
}

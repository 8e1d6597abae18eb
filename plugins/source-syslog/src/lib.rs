//! The `syslog` source: receives syslog messages over UDP, TCP or a Unix datagram socket, as a
//! syslog server would, and parses RFC 5424 and RFC 3164 into `hostname`, `appname`,
//! `procid`, `msgid`, `facility`, `severity`, `structured_data` and the `message`, dated by
//! the message's own timestamp.
//!
//! Over TCP each message is framed either by octet counting or by a newline (RFC 6587), told
//! apart per message, since `logger -T` and rsyslog's forwarding differ. A message that does
//! not parse as syslog is passed on as text and counted (`lines_modified{reason=decode_failed}`).

mod framing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use deepsentry_core::decode::Decoding;
use deepsentry_core::lines::{LineDecoder, LineSettings};
use deepsentry_core::metrics::ComponentMetrics;
use deepsentry_core::net::{check_host_port, serve_connections};
use deepsentry_core::output::Output;
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::timestamp::EventTime;
use deepsentry_core::{
    Batch, BuildContext, Origin, ShutdownSignal, Source, SourceConfig, SourceContext,
    MAX_BATCH_EVENTS,
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram};

use framing::SyslogFramer;

/// How messages arrive.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// UDP datagrams on `address` (`0.0.0.0:514`), one message each (the default).
    #[default]
    Udp,
    /// TCP connections on `address`, octet-counted or newline-framed messages.
    Tcp,
    /// A Unix datagram socket at the path `address` (what `logger -u` and local daemons
    /// write to).
    Unix,
}

/// Settings of the `syslog` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSourceConfig {
    /// `udp` (default), `tcp` or `unix`.
    #[serde(default)]
    pub mode: Mode,
    /// `host:port` to listen on for `udp` and `tcp`; the socket's path for `unix`.
    pub address: String,
    /// Longer messages are cut to this many bytes (and counted). Default 102400.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// TCP: the most clients served at once. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Where an event's time comes from: `auto` (default: the message's timestamp, else
    /// arrival) or `arrival`.
    #[serde(default)]
    pub timestamp: EventTime,
}

fn default_max_message_bytes() -> usize {
    deepsentry_core::lines::DEFAULT_MAX_LINE_BYTES
}

fn default_max_connections() -> usize {
    256
}

deepsentry_core::register_source!(
    "syslog",
    "Receives syslog (RFC 5424 and 3164) over UDP, TCP or a Unix socket",
    SyslogSourceConfig
);

impl SyslogSourceConfig {
    fn checked(&self) -> anyhow::Result<()> {
        if self.mode != Mode::Unix {
            check_host_port(&self.address)?;
        }
        anyhow::ensure!(
            self.max_message_bytes >= 1,
            "`max_message_bytes` must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "`max_connections` must be at least 1"
        );
        Ok(())
    }

    fn line_settings(&self) -> LineSettings {
        LineSettings {
            decoding: Decoding::Syslog,
            timestamp: self.timestamp,
            ..LineSettings::plain(self.max_message_bytes)
        }
    }
}

/// A socket receiving one message per datagram.
#[derive(Debug)]
pub enum DatagramSocket {
    /// UDP.
    Udp(UdpSocket),
    /// A Unix datagram socket, and its path (removed when the source stops).
    Unix(UnixDatagram, PathBuf),
}

impl DatagramSocket {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            DatagramSocket::Udp(socket) => socket.recv(buf).await,
            DatagramSocket::Unix(socket, _) => socket.recv(buf).await,
        }
    }

    /// A datagram that is already waiting, if any.
    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            DatagramSocket::Udp(socket) => socket.try_recv(buf).ok(),
            DatagramSocket::Unix(socket, _) => socket.try_recv(buf).ok(),
        }
    }
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        if let DatagramSocket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A bound `syslog` source.
#[derive(Debug)]
pub enum SyslogSource {
    /// Receiving datagrams (UDP or a Unix socket).
    Datagrams(SyslogSourceConfig, DatagramSocket),
    /// Accepting TCP connections.
    Tcp(SyslogSourceConfig, TcpListener),
}

#[async_trait]
impl SourceConfig for SyslogSourceConfig {
    async fn check(&self, _cx: &BuildContext) -> anyhow::Result<()> {
        self.checked()
    }

    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Source>> {
        self.checked()?;
        let cannot = || format!("cannot listen on {} ({:?})", self.address, self.mode);
        Ok(Box::new(match self.mode {
            Mode::Udp => SyslogSource::Datagrams(
                self.clone(),
                DatagramSocket::Udp(UdpSocket::bind(&self.address).await.with_context(cannot)?),
            ),
            Mode::Tcp => SyslogSource::Tcp(
                self.clone(),
                TcpListener::bind(&self.address)
                    .await
                    .with_context(cannot)?,
            ),
            Mode::Unix => {
                let path = PathBuf::from(&self.address);
                // A socket file left by an earlier run that did not stop cleanly.
                if std::fs::symlink_metadata(&path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(&path);
                }
                let socket = UnixDatagram::bind(&path).with_context(cannot)?;
                SyslogSource::Datagrams(self.clone(), DatagramSocket::Unix(socket, path))
            }
        }))
    }
}

#[async_trait]
impl Source for SyslogSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> anyhow::Result<()> {
        match *self {
            SyslogSource::Datagrams(config, socket) => {
                receive_datagrams(&config, &socket, cx).await
            }
            SyslogSource::Tcp(config, listener) => serve(config, listener, cx).await,
        }
    }
}

/// The largest datagram: a UDP payload over IPv4 (a Unix datagram may be larger; it is cut).
const DATAGRAM_BYTES: usize = 65_536;

/// Receives datagrams until shutdown, one message each, sending what arrived together as one
/// batch.
async fn receive_datagrams(
    config: &SyslogSourceConfig,
    socket: &DatagramSocket,
    mut cx: SourceContext,
) -> anyhow::Result<()> {
    let stream = match config.mode {
        Mode::Unix => format!("unix://{}", config.address),
        _ => format!("udp://{}", config.address),
    };
    let mut decoder = LineDecoder::new(
        Origin::new(cx.id.as_str(), stream.as_str()),
        &cx.metrics,
        &config.line_settings(),
    );
    let errors = LogRateLimit::new(Duration::from_secs(10));
    let mut buf = vec![0u8; DATAGRAM_BYTES.max(config.max_message_bytes.saturating_add(1))];
    tracing::info!(source = %cx.id, address = %config.address, mode = ?config.mode, "listening");
    loop {
        let received = tokio::select! {
            biased;
            _ = cx.shutdown.wait() => return Ok(()),
            received = socket.recv(&mut buf) => received,
        };
        let len = match received {
            Ok(len) => len,
            Err(e) => {
                if let Some(held_back) = errors.check() {
                    tracing::warn!(source = %cx.id, earlier_warnings_not_logged = held_back, "receive failed: {e}");
                }
                continue;
            }
        };
        let mut messages = vec![datagram(&buf[..len], config.max_message_bytes)];
        // Whatever else is already waiting goes in the same batch.
        while messages.len() < MAX_BATCH_EVENTS {
            match socket.try_recv(&mut buf) {
                Some(len) => messages.push(datagram(&buf[..len], config.max_message_bytes)),
                None => break,
            }
        }
        let truncated = messages.iter().filter(|(_, cut)| *cut).count() as u64;
        let mut events = Vec::with_capacity(messages.len());
        decoder.messages(messages.into_iter().map(|(m, _)| m), truncated, &mut events);
        if cx.out.send(Batch::new(events)).await.is_err() {
            return Ok(());
        }
    }
}

/// One datagram's message, cut to `max` bytes, without a trailing newline; and whether it
/// was cut.
fn datagram(bytes: &[u8], max: usize) -> (Bytes, bool) {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r' | b'\0') {
        end -= 1;
    }
    let cut = end > max;
    (Bytes::copy_from_slice(&bytes[..end.min(max)]), cut)
}

async fn serve(
    config: SyslogSourceConfig,
    listener: TcpListener,
    cx: SourceContext,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    tracing::info!(source = %cx.id, address = %config.address, mode = "tcp", "listening");
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
                if let Err(e) =
                    read_connection(stream, &peer, &config, &id, &metrics, out, shutdown).await
                {
                    tracing::warn!(source = %id, %peer, "connection failed: {e}");
                }
            }
        },
    )
    .await;
    Ok(())
}

/// Reads one connection's messages to its end (or shutdown).
async fn read_connection(
    mut stream: TcpStream,
    peer: &str,
    config: &SyslogSourceConfig,
    source_id: &str,
    metrics: &ComponentMetrics,
    mut out: Output,
    shutdown: ShutdownSignal,
) -> std::io::Result<()> {
    let mut decoder = LineDecoder::new(
        Origin::new(source_id, peer),
        metrics,
        &config.line_settings(),
    );
    let mut framer = SyslogFramer::new(config.max_message_bytes);
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => Ok(0),
            read = stream.read_buf(framer.buffer_mut()) => read,
        };
        let (at_eof, error) = match read {
            Ok(0) => (true, None),
            Ok(_) => (false, None),
            Err(e) => (true, Some(e)),
        };
        let (mut messages, mut truncated) = (Vec::new(), 0);
        while let Some(message) = framer.next_message(at_eof) {
            truncated += u64::from(message.truncated);
            messages.push(message.bytes);
        }
        for chunk in messages.chunks(MAX_BATCH_EVENTS) {
            let mut events = Vec::with_capacity(chunk.len());
            decoder.messages(chunk.iter().cloned(), truncated, &mut events);
            truncated = 0;
            if out.send(Batch::new(events)).await.is_err() {
                return Ok(());
            }
        }
        if at_eof {
            return error.map_or(Ok(()), Err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let config: SyslogSourceConfig =
            serde_yaml::from_str("mode: tcp\naddress: 127.0.0.1:5514").unwrap();
        assert!(config.checked().is_ok());
        let config: SyslogSourceConfig =
            serde_yaml::from_str("mode: udp\naddress: nowhere").unwrap();
        assert!(config
            .checked()
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        let config: SyslogSourceConfig =
            serde_yaml::from_str("mode: unix\naddress: /tmp/x.sock").unwrap();
        assert!(config.checked().is_ok());
        assert!(serde_yaml::from_str::<SyslogSourceConfig>("mode: tls\naddress: x:1").is_err());
    }

    #[test]
    fn datagrams_lose_their_line_end_and_are_cut_at_the_limit() {
        assert_eq!(
            datagram(b"<13>hi\n\0", 100),
            (Bytes::from_static(b"<13>hi"), false)
        );
        assert_eq!(
            datagram(b"<13>hello", 4),
            (Bytes::from_static(b"<13>"), true)
        );
    }
}

//! The `syslog` sink: forwards events to a syslog daemon over UDP, TCP or a Unix socket
//! (`/dev/log`), as RFC 5424 (with score and threshold as structured data) or RFC 3164.
//!
//! A batch is acknowledged once it is written. When the daemon cannot be reached, the sink
//! keeps the batch, reconnects with backoff (100 ms doubling up to `reconnect_max_secs`) and
//! sends it again; meanwhile the pipeline is held back, nothing is dropped. Over TCP a batch
//! cut by a broken connection is sent again whole, so a daemon can see a few lines twice; over
//! UDP a lost datagram cannot be noticed (that is UDP).

mod format;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::backoff::Backoff;
use deepsentry_core::codec::EncodingConfig;
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::{Batch, BuildContext, Sink, SinkConfig, SinkContext};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram};

pub use format::{Facility, Header, Protocol, Severity, SyslogEncodings};

/// How messages travel to the daemon.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A Unix datagram socket, `/dev/log` unless `address` says otherwise (the default, like
    /// `logger`).
    #[default]
    Unix,
    /// UDP datagrams to `address` (`host:514`).
    Udp,
    /// A TCP stream to `address` (`host:514`), framed by `framing`.
    Tcp,
}

/// How messages are delimited on a TCP stream (RFC 6587).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `LENGTH SP MESSAGE` (the default): any message, line breaks included.
    #[default]
    OctetCounting,
    /// `MESSAGE LF`, for daemons that only split on newlines.
    Newline,
}

/// Settings of the `syslog` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// `unix` (default), `udp` or `tcp`.
    #[serde(default)]
    pub mode: Mode,
    /// `host:port` for `udp` and `tcp` (required); the socket path for `unix` (default
    /// `/dev/log`).
    #[serde(default)]
    pub address: Option<String>,
    /// `rfc5424` or `rfc3164`. Default: `rfc5424` over the network, `rfc3164` on a Unix
    /// socket (what `logger` writes there, and what daemons parse on `/dev/log`). `format`,
    /// its former name, is still read.
    #[serde(default, alias = "format")]
    pub protocol: Option<Protocol>,
    /// TCP framing: `octet_counting` (default) or `newline`.
    #[serde(default)]
    pub framing: Framing,
    /// Default `user`.
    #[serde(default)]
    pub facility: Facility,
    /// Default `alert` (as `logger -p user.alert`).
    #[serde(default)]
    pub severity: Severity,
    /// `APP-NAME` / tag. Default `deepsentry`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// `HOSTNAME`. Default: this machine's host name over the network; none on a Unix
    /// socket, where the daemon adds its own.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The message part: `monitor` (the live monitor's line, default), `text` or `json`.
    #[serde(default)]
    pub encoding: EncodingConfig<SyslogEncodings>,
    /// The longest pause between reconnection attempts, in seconds. Default 30.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: f64,
    /// Longer messages are cut to this many bytes (and counted in
    /// `lines_modified{reason=truncated}`). Default: what the transport takes, 65,507 bytes
    /// over UDP (IPv4), the kernel's default socket send buffer less 1 KiB on a Unix socket,
    /// no limit over TCP.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Seconds a TCP or Unix socket write may take before the connection is made anew (a
    /// daemon that stopped reading). Default 10.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: f64,
}

fn default_write_timeout_secs() -> f64 {
    10.0
}

/// The largest UDP payload over IPv4: 65,535 less the IP and UDP headers.
const UDP_MAX_PAYLOAD: usize = 65_507;

/// The largest datagram a Unix socket takes by default: the kernel's default send buffer
/// (`net.core.wmem_default`) less room for its own bookkeeping.
fn unix_datagram_limit() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(UDP_MAX_PAYLOAD, |buffer| {
            buffer.saturating_sub(1024).max(1024)
        })
}

fn default_app_name() -> String {
    "deepsentry".to_owned()
}

fn default_reconnect_max_secs() -> f64 {
    30.0
}

deepsentry_core::register_sink!(
    "syslog",
    "Forwards events to syslog (RFC 5424/3164) over unix, udp or tcp; retries, never drops",
    SyslogSinkConfig
);

/// Where the sink sends, resolved at build time.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Udp(String),
    Tcp(String, Framing),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Udp(address) => write!(f, "udp:{address}"),
            Target::Tcp(address, _) => write!(f, "tcp:{address}"),
        }
    }
}

enum Connection {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Target {
    async fn connect(&self) -> std::io::Result<Connection> {
        Ok(match self {
            Target::Unix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path)?;
                Connection::Unix(socket)
            }
            Target::Udp(address) => {
                let socket = UdpSocket::bind("0.0.0.0:0").await?;
                socket.connect(address).await?;
                Connection::Udp(socket)
            }
            Target::Tcp(address, _) => Connection::Tcp(TcpStream::connect(address).await?),
        })
    }
}

/// The messages of one batch: one buffer and where each message ends.
#[derive(Default)]
struct Messages {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Messages {
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(s, &e)| &self.bytes[s..e])
    }
}

impl Connection {
    /// [`Connection::send`] within `timeout`: a peer that stops reading (a full TCP window, a
    /// stalled Unix socket) is an error, and the connection is made anew.
    async fn send_within(
        &mut self,
        messages: &Messages,
        framing: Framing,
        timeout: Duration,
    ) -> std::io::Result<()> {
        match tokio::time::timeout(timeout, self.send(messages, framing)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("a write took longer than {timeout:?}"),
            )),
        }
    }

    async fn send(&mut self, messages: &Messages, framing: Framing) -> std::io::Result<()> {
        match self {
            Connection::Unix(socket) => {
                for message in messages.iter() {
                    socket.send(message).await?;
                }
            }
            Connection::Udp(socket) => {
                for message in messages.iter() {
                    socket.send(message).await?;
                }
            }
            Connection::Tcp(stream) => {
                let mut framed = Vec::with_capacity(messages.bytes.len() + 8 * messages.ends.len());
                for message in messages.iter() {
                    match framing {
                        Framing::OctetCounting => {
                            framed.extend_from_slice(format!("{} ", message.len()).as_bytes());
                            framed.extend_from_slice(message);
                        }
                        Framing::Newline => {
                            framed.extend_from_slice(message);
                            framed.push(b'\n');
                        }
                    }
                }
                stream.write_all(&framed).await?;
                stream.flush().await?;
            }
        }
        Ok(())
    }
}

/// A built `syslog` sink.
#[derive(Debug)]
pub struct SyslogSink {
    target: Target,
    header: Header,
    reconnect_max: Duration,
    max_message_bytes: Option<usize>,
    write_timeout: Duration,
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "-".to_owned())
}

#[async_trait]
impl SinkConfig for SyslogSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        let network_address = |mode: &str| {
            self.address
                .clone()
                .with_context(|| format!("`address` (host:port) is required with `mode: {mode}`"))
        };
        let target = match self.mode {
            Mode::Unix => {
                Target::Unix(PathBuf::from(self.address.as_deref().unwrap_or("/dev/log")))
            }
            Mode::Udp => Target::Udp(network_address("udp")?),
            Mode::Tcp => Target::Tcp(network_address("tcp")?, self.framing),
        };
        anyhow::ensure!(
            self.reconnect_max_secs.is_finite() && self.reconnect_max_secs > 0.0,
            "`reconnect_max_secs` must be a positive number of seconds"
        );
        anyhow::ensure!(
            self.write_timeout_secs.is_finite() && self.write_timeout_secs > 0.0,
            "`write_timeout_secs` must be a positive number of seconds"
        );
        anyhow::ensure!(
            self.max_message_bytes.is_none_or(|max| max >= 64),
            "`max_message_bytes` must be at least 64"
        );
        let max_message_bytes = self.max_message_bytes.or(match self.mode {
            Mode::Udp => Some(UDP_MAX_PAYLOAD),
            Mode::Unix => Some(unix_datagram_limit()),
            Mode::Tcp => None,
        });
        Ok(Box::new(SyslogSink {
            target,
            header: Header {
                protocol: self.protocol.unwrap_or(match self.mode {
                    Mode::Unix => Protocol::Rfc3164,
                    Mode::Udp | Mode::Tcp => Protocol::Rfc5424,
                }),
                facility: self.facility,
                severity: self.severity,
                app_name: self.app_name.clone(),
                hostname: match self.mode {
                    Mode::Unix => self.hostname.clone(),
                    Mode::Udp | Mode::Tcp => {
                        Some(self.hostname.clone().unwrap_or_else(local_hostname))
                    }
                },
                proc_id: std::process::id(),
                encoding: self.encoding.get(),
            },
            reconnect_max: Duration::from_secs_f64(self.reconnect_max_secs),
            max_message_bytes,
            write_timeout: Duration::from_secs_f64(self.write_timeout_secs),
        }))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing: it connects when it runs.
        self.build(cx).await.map(drop)
    }
}

impl SyslogSink {
    /// Encodes the batch; returns how many messages were cut to `max_message_bytes`.
    fn encode(&self, batch: &Batch, messages: &mut Messages) -> usize {
        messages.bytes.clear();
        messages.ends.clear();
        let mut truncated = 0;
        for event in &batch.events {
            let start = messages.bytes.len();
            self.header.write(event, &mut messages.bytes);
            if let Some(max) = self.max_message_bytes {
                if messages.bytes.len() - start > max {
                    // Cut on a character boundary, so the message stays valid UTF-8.
                    let mut end = start + max;
                    while end > start && (messages.bytes[end] & 0xC0) == 0x80 {
                        end -= 1;
                    }
                    messages.bytes.truncate(end);
                    truncated += 1;
                }
            }
            messages.ends.push(messages.bytes.len());
        }
        truncated
    }
}

#[async_trait]
impl Sink for SyslogSink {
    async fn run(self: Box<Self>, mut cx: SinkContext) -> anyhow::Result<()> {
        let delivered = cx.metrics.counter("events_delivered");
        let errors = cx.metrics.counter("send_errors");
        let truncated = cx
            .metrics
            .counter_with_reason("lines_modified", "truncated");
        let truncation_log = LogRateLimit::new(Duration::from_secs(10));
        let framing = match self.target {
            Target::Tcp(_, framing) => framing,
            _ => Framing::Newline,
        };
        let mut connection: Option<Connection> = None;
        let mut messages = Messages::default();
        // Set while the daemon cannot be reached: since when, and when to say so again.
        let mut outage: Option<(Instant, Instant)> = None;
        while let Some(batch) = cx.input.recv().await {
            if batch.is_empty() {
                batch.delivered();
                continue;
            }
            let cut = self.encode(&batch, &mut messages);
            if cut > 0 {
                truncated.add(cut as u64);
                if let Some(not_logged) = truncation_log.check() {
                    tracing::warn!(
                        sink = %cx.id,
                        target = %self.target,
                        messages = cut,
                        max_message_bytes = self.max_message_bytes,
                        earlier_warnings_not_logged = not_logged,
                        "messages longer than the transport takes were truncated (counted in \
                         lines_modified{{reason=truncated}})"
                    );
                }
            }
            let mut backoff = Backoff::new(Duration::from_millis(100), self.reconnect_max);
            loop {
                let result = match connection.as_mut() {
                    Some(open) => {
                        open.send_within(&messages, framing, self.write_timeout)
                            .await
                    }
                    None => match self.target.connect().await {
                        Ok(mut open) => {
                            let sent = open
                                .send_within(&messages, framing, self.write_timeout)
                                .await;
                            connection = Some(open);
                            sent
                        }
                        Err(e) => Err(e),
                    },
                };
                match result {
                    Ok(()) => {
                        delivered.add(batch.len() as u64);
                        batch.delivered();
                        if let Some((since, _)) = outage.take() {
                            tracing::info!(
                                sink = %cx.id,
                                target = %self.target,
                                "syslog reachable again after {:.1} s",
                                since.elapsed().as_secs_f64()
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        errors.inc();
                        connection = None;
                        let now = Instant::now();
                        match &mut outage {
                            None => {
                                tracing::warn!(
                                    sink = %cx.id,
                                    target = %self.target,
                                    events = batch.len(),
                                    "cannot send to syslog ({e}); holding the events and retrying"
                                );
                                outage = Some((now, now + Duration::from_secs(30)));
                            }
                            Some((since, next_report)) if now >= *next_report => {
                                tracing::warn!(
                                    sink = %cx.id,
                                    target = %self.target,
                                    "syslog still unreachable after {:.0} s ({e}); events wait",
                                    since.elapsed().as_secs_f64()
                                );
                                *next_report = now + Duration::from_secs(30);
                            }
                            Some(_) => {}
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepsentry_core::codec::Encoding;

    #[test]
    fn defaults_follow_logger() {
        let config: SyslogSinkConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(config.mode, Mode::Unix);
        assert_eq!(config.facility, Facility::User);
        assert_eq!(config.severity, Severity::Alert);
        assert_eq!(config.protocol, None);
        assert_eq!(config.encoding.get(), Encoding::Monitor);
        // The former name of `protocol`.
        let config: SyslogSinkConfig = serde_yaml::from_str("format: rfc5424").unwrap();
        assert_eq!(config.protocol, Some(Protocol::Rfc5424));
        assert_eq!(config.framing, Framing::OctetCounting);
        assert_eq!(config.app_name, "deepsentry");
        let err = serde_yaml::from_str::<SyslogSinkConfig>("severity: critical").unwrap_err();
        assert!(err.to_string().contains("`crit`"), "{err}");
    }

    #[tokio::test]
    async fn network_modes_need_an_address() {
        let config: SyslogSinkConfig = serde_yaml::from_str("mode: tcp").unwrap();
        let cx = BuildContext {
            id: "out".into(),
            data_dir: std::env::temp_dir(),
            metrics: Default::default(),
        };
        let Err(err) = config.build(&cx).await else {
            panic!("built without an address");
        };
        assert!(err.to_string().contains("`address`"), "{err}");
    }

    #[tokio::test]
    async fn octet_counting_frames_each_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::Tcp(
            listener.local_addr().unwrap().to_string(),
            Framing::OctetCounting,
        );
        let mut connection = target.connect().await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        let messages = Messages {
            bytes: b"abcde\nf".to_vec(),
            ends: vec![3, 7],
        };
        connection
            .send(&messages, Framing::OctetCounting)
            .await
            .unwrap();
        drop(connection);
        let mut received = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut received)
            .await
            .unwrap();
        assert_eq!(received, b"3 abc4 de\nf");
    }
}

//! The `http` source: events `POST`ed over HTTP/1.1, answered only once they are delivered.
//!
//! A request's body is newline-delimited text, or with `decoding: json` NDJSON or one JSON
//! array (gzip-compressed with `Content-Encoding: gzip`, or not). The source's `decoding`
//! setting says how to read it, never the request's `Content-Type`, so a client cannot change
//! how events are parsed. Every record is checked to decode before any is sent: a request is
//! taken whole or refused whole with `400`.
//!
//! The answer is the pipeline's end-to-end acknowledgement: `200` once every sink has
//! delivered the request's events, `500` when a sink gave up on them, `503` when they may have
//! been lost (a component stopped), when the pipeline is backed up (the events could not be
//! handed on within `backpressure_timeout_ms`) or when it is shutting down. A client that
//! resends on anything but `200` gets at-least-once delivery: an event is never lost, and may
//! arrive twice when a request was partly delivered before it failed.

mod body;
mod config;
mod request;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deepsentry_core::lines::{LineDecoder, LineSettings};
use deepsentry_core::metrics::{ComponentMetrics, Counter};
use deepsentry_core::net::accept;
use deepsentry_core::output::Output;
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::{
    AckStatus, AckToken, Batch, Origin, ShutdownSignal, Source, SourceContext, MAX_BATCH_EVENTS,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::body::{gunzip, split_body, validate, GunzipError, Message};
pub use crate::config::{HttpSourceConfig, Secret};
use crate::request::*;

deepsentry_core::describe_metric!(
    "requests_accepted_total",
    "HTTP requests answered 200 once their events were delivered."
);
deepsentry_core::describe_metric!(
    "requests_refused_total",
    "HTTP requests refused or not delivered, by reason."
);

/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's headers (or, kept alive, to start the next
/// request): a silent client does not hold a connection slot for long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a refused request's unread body is read and discarded before answering, and
/// for how long at most: a client still sending its body would otherwise see the connection
/// reset instead of the answer that says why.
const DRAIN_BYTES: usize = 1024 * 1024;
/// See [`DRAIN_BYTES`].
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// A built `http` source: its listening socket.
#[derive(Debug)]
pub struct HttpSource {
    config: HttpSourceConfig,
    listener: TcpListener,
}

#[async_trait]
impl Source for HttpSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> anyhow::Result<()> {
        let HttpSource { config, listener } = *self;
        serve(config, listener, cx).await;
        Ok(())
    }
}

/// What every connection of the source shares.
struct Shared {
    id: String,
    config: HttpSourceConfig,
    settings: LineSettings,
    backpressure_timeout: Duration,
    /// The source's output, which each request clones to send; taken away at shutdown so the
    /// pipeline can drain once the requests still sending have given up.
    out: Mutex<Option<Output>>,
    shutdown: ShutdownSignal,
    metrics: ComponentMetrics,
    accepted: Counter,
    /// A flood of bad requests logs once per interval, with the count held back.
    refusals: LogRateLimit,
}

impl Shared {
    /// A copy of the output to send one request's events, or `None` once shutting down.
    fn output(&self) -> Option<Output> {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts and (rate-limited) logs a refusal. The log names the peer and the reason, never
    /// a header: the `Authorization` header holds a secret.
    fn refused(&self, refusal: &Refusal, peer: &str) {
        self.metrics
            .counter_with_reason("requests_refused", refusal.reason)
            .inc();
        if let Some(held_back) = self.refusals.check() {
            tracing::warn!(
                source = %self.id,
                %peer,
                status = refusal.status.as_u16(),
                reason = refusal.reason,
                earlier_refusals_not_logged = held_back,
                "refused a request: {} (counted in requests_refused{{reason=...}})",
                refusal.message
            );
        }
    }
}

/// Accepts connections until shutdown, then waits for the requests in flight to be answered.
async fn serve(config: HttpSourceConfig, listener: TcpListener, cx: SourceContext) {
    let SourceContext {
        id,
        out,
        shutdown,
        metrics,
    } = cx;
    let shared = Arc::new(Shared {
        settings: config.line_settings(),
        backpressure_timeout: Duration::from_millis(config.backpressure_timeout_ms),
        accepted: metrics.counter("requests_accepted"),
        refusals: LogRateLimit::new(Duration::from_secs(10)),
        out: Mutex::new(Some(out)),
        id,
        config,
        shutdown,
        metrics,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept_errors = LogRateLimit::new(Duration::from_secs(10));
    let mut connections = JoinSet::new();
    tracing::info!(
        source = %shared.id,
        address = %shared.config.address,
        path = shared.config.path.as_deref().unwrap_or("(any)"),
        "listening for POST requests"
    );
    while let Some((stream, peer, permit)) = accept(
        &listener,
        &slots,
        &shared.shutdown,
        &accept_errors,
        &shared.id,
    )
    .await
    {
        let shared = shared.clone();
        connections.spawn(async move {
            serve_connection(shared, stream, peer.to_string()).await;
            drop(permit);
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    // New clients are refused from here on. Requests still sending see the signal and answer
    // 503; once they have, no copy of the output is left and the pipeline drains, which
    // settles the acknowledgements the requests already sent are waiting for.
    drop(listener);
    drop(
        shared
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
    );
    while connections.join_next().await.is_some() {}
    tracing::info!(source = %shared.id, "stopped");
}

/// Serves one connection's requests, one at a time, until the client closes it or, at
/// shutdown, once the request in progress is answered.
async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: String) {
    // Answers are small and written at once: do not hold them back for more data.
    let _ = stream.set_nodelay(true);
    // One decoder per connection, so its warnings about truncated lines are rate-limited
    // across the connection's requests. Requests on a connection come one after the other;
    // the lock is never contended.
    let decoder = Arc::new(Mutex::new(LineDecoder::new(
        Origin::new(shared.id.as_str(), peer.as_str()),
        &shared.metrics,
        &shared.settings,
    )));
    let peer: Arc<str> = peer.into();
    let service = {
        let shared = shared.clone();
        service_fn(move |request: Request<Incoming>| {
            let (shared, decoder, peer) = (shared.clone(), decoder.clone(), peer.clone());
            async move { Ok::<_, Infallible>(respond(&shared, &decoder, &peer, request).await) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shared.shutdown.wait() => {}
    }
    // Closes an idle connection now, and a busy one once its answer is written.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// The answer to one request, counted.
async fn respond(
    shared: &Shared,
    decoder: &Mutex<LineDecoder>,
    peer: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match handle(shared, decoder, request).await {
        Ok(events) => {
            shared.accepted.inc();
            reply(StatusCode::OK, format!("{events} events delivered\n"))
        }
        Err(refusal) => {
            shared.refused(&refusal, peer);
            refusal.into_response()
        }
    }
}

/// Takes one request: checks its head, reads and decodes its body, sends its events and
/// waits for their delivery. `Ok` holds the number of events delivered.
async fn handle(
    shared: &Shared,
    decoder: &Mutex<LineDecoder>,
    request: Request<Incoming>,
) -> Result<usize, Refusal> {
    let (parts, mut body) = request.into_parts();
    let gzip = match admit(shared, &parts) {
        Ok(gzip) => gzip,
        Err(refusal) => {
            // A client that waits for `100 Continue` has not sent its body: nothing to drain.
            if !expects_continue(&parts.headers) {
                drain(&mut body).await;
            }
            return Err(refusal);
        }
    };
    let max = shared.config.max_body_bytes;
    let read = tokio::select! {
        biased;
        _ = shared.shutdown.wait() => Err(Refusal::shutting_down()),
        read = tokio::time::timeout(BODY_TIMEOUT, read_body(&mut body, max)) => {
            read.unwrap_or_else(|_| Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            )))
        }
    };
    let raw = match read {
        Ok(raw) => raw,
        Err(refusal) => {
            if refusal.status == StatusCode::PAYLOAD_TOO_LARGE {
                drain(&mut body).await;
            }
            return Err(refusal);
        }
    };
    let text = if gzip {
        // Bounded by `max_body_bytes`, so inflating in place does not stall the runtime long.
        gunzip(&raw, max).map_err(|e| match e {
            GunzipError::TooLarge => Refusal::too_large(max),
            GunzipError::Corrupt(why) => Refusal::bad_body(format!(
                "Content-Encoding is gzip but the body is not readable gzip: {why}"
            )),
        })?
    } else {
        raw
    };
    let config = &shared.config;
    let split =
        split_body(&text, config.decoding, config.max_line_bytes).map_err(Refusal::bad_body)?;
    validate(
        &split,
        config.decoding,
        config.message_field.as_deref(),
        config.max_line_bytes,
        chrono::Utc::now(),
    )
    .map_err(Refusal::bad_body)?;
    if split.messages.is_empty() {
        return Ok(0);
    }
    deliver(shared, decoder, split.messages).await
}

/// Sends the events of `messages` in batches of at most [`MAX_BATCH_EVENTS`], each carrying a
/// clone of one acknowledgement token, and waits for the pipeline's verdict on all of them.
async fn deliver(
    shared: &Shared,
    decoder: &Mutex<LineDecoder>,
    messages: Vec<Message>,
) -> Result<usize, Refusal> {
    let Some(mut out) = shared.output() else {
        return Err(Refusal::shutting_down());
    };
    let (token, delivered) = AckToken::new();
    let deadline = tokio::time::Instant::now() + shared.backpressure_timeout;
    for chunk in messages.chunks(MAX_BATCH_EVENTS) {
        let mut events = Vec::with_capacity(chunk.len());
        let truncated = chunk.iter().filter(|m| m.truncated).count() as u64;
        {
            let mut decoder = decoder.lock().unwrap_or_else(PoisonError::into_inner);
            decoder.messages(chunk.iter().map(|m| m.text.clone()), truncated, &mut events);
        }
        let batch = Batch::with_ack(events, token.clone());
        // Returning early drops the token unsettled: batches already sent still reach the
        // sinks, and the client, told to resend, may deliver them twice (at least once).
        tokio::select! {
            biased;
            _ = shared.shutdown.wait() => return Err(Refusal::shutting_down()),
            sent = tokio::time::timeout_at(deadline, out.send(batch)) => match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Refusal::shutting_down()),
                Err(_) => return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backed_up",
                    format!(
                        "the pipeline is backed up: the events could not be handed on within \
                         backpressure_timeout_ms ({} ms); send them again later",
                        shared.backpressure_timeout.as_millis()
                    ),
                )),
            },
        }
    }
    // Every batch holds a clone of the token; this copy is the source's own. Settling and
    // dropping it (and the output, which would keep the pipeline from draining at shutdown)
    // before waiting leaves the verdict to the batches alone.
    drop(out);
    token.done();
    drop(token);
    match delivered.await.unwrap_or(AckStatus::Lost) {
        AckStatus::Delivered => Ok(messages.len()),
        AckStatus::Failed => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            "a sink gave up on these events for good (see its log)",
        )),
        AckStatus::Lost => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lost",
            "the events may not all have been delivered (a component stopped); send them again",
        )),
    }
}

#[cfg(test)]
mod tests {
    use deepsentry_core::decode::Decoding;
    use deepsentry_core::lines::DEFAULT_MAX_LINE_BYTES;
    use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING};
    use hyper::HeaderMap;
    use std::io::Write;
    use std::net::SocketAddr;

    use deepsentry_core::metrics::Metrics;
    use deepsentry_core::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn defaults_and_required_keys() {
        let config: HttpSourceConfig = serde_yaml::from_str("address: 127.0.0.1:8080").unwrap();
        assert_eq!(config.decoding, Decoding::Text);
        assert_eq!(config.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(config.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(config.backpressure_timeout_ms, 1000);
        assert!(config.path.is_none() && config.auth_token.is_none());
        config.checked_settings().unwrap();
        let err = serde_yaml::from_str::<HttpSourceConfig>("path: /x").unwrap_err();
        assert!(err.to_string().contains("missing field `address`"), "{err}");
        let err =
            serde_yaml::from_str::<HttpSourceConfig>("address: x:1\nmethod: put").unwrap_err();
        assert!(err.to_string().contains("unknown field `method`"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused() {
        let check = |yaml: &str| {
            serde_yaml::from_str::<HttpSourceConfig>(yaml)
                .unwrap()
                .checked_settings()
                .unwrap_err()
                .to_string()
        };
        assert!(check("address: localhost").contains("host:port"));
        assert!(check("address: 127.0.0.1:80\npath: ingest").contains("must start with `/`"));
        assert!(check("address: 127.0.0.1:80\nmax_body_bytes: 0").contains("max_body_bytes"));
        assert!(check("address: 127.0.0.1:80\nauth_token: ''").contains("`auth_token` is empty"));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let config: HttpSourceConfig =
            serde_yaml::from_str("address: 127.0.0.1:80\nauth_token: s3cr3t-t0ken").unwrap();
        assert_eq!(config.auth_token.as_ref().unwrap().expose(), "s3cr3t-t0ken");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc123", b"abc123"));
        assert!(!same_secret(b"abc124", b"abc123"));
        assert!(!same_secret(b"xbc123", b"abc123"));
        assert!(!same_secret(b"abc12", b"abc123"));
        assert!(!same_secret(b"", b"abc123"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"abc"), None);
        let token = Secret("abc".into());
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, &token));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abd"));
        assert!(!authorized(&headers, &token));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(authorized(&headers, &token));
    }

    #[test]
    fn content_encodings() {
        let mut headers = HeaderMap::new();
        assert!(!gzipped(&headers).unwrap());
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert!(gzipped(&headers).unwrap());
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert!(!gzipped(&headers).unwrap());
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            gzipped(&headers).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    /// A running source with its output channel and counters.
    struct Running {
        address: SocketAddr,
        batches: mpsc::Receiver<Batch>,
        shutdown: ShutdownSignal,
        metrics: Metrics,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Running {
        fn refused(&self, reason: &'static str) -> u64 {
            self.metrics
                .component("web")
                .counter_with_reason("requests_refused", reason)
                .get()
        }

        /// Shuts the source down and checks that it returns.
        async fn stop(self) {
            self.shutdown.trigger();
            drop(self.batches);
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("the source returns after shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// Starts a source with `yaml`'s settings on a free port, its output a channel of
    /// `capacity` batches.
    async fn start(yaml: &str, capacity: usize) -> Running {
        let config: HttpSourceConfig = serde_yaml::from_str(yaml).unwrap();
        config.checked_settings().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, batches) = mpsc::channel(capacity);
        let metrics = Metrics::default();
        let shutdown = ShutdownSignal::new();
        let cx = SourceContext {
            id: "web".into(),
            out: Output::new(vec![("sink".into(), tx)], Counter::default()),
            shutdown: shutdown.clone(),
            metrics: metrics.component("web"),
        };
        let source = Box::new(HttpSource { config, listener });
        let task = tokio::spawn(source.run(cx));
        Running {
            address,
            batches,
            shutdown,
            metrics,
            task,
        }
    }

    /// Sends one request (`headers`: extra header lines, each ending in `\r\n`) and returns
    /// the status and the whole answer.
    async fn send(
        address: SocketAddr,
        method: &'static str,
        path: &'static str,
        headers: &'static str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Content-Length: {}\r\n{headers}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // A refusal may come before the body is read; the answer is what is checked.
        let _ = stream.write_all(&body).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }

    fn messages(batch: &Batch) -> Vec<&str> {
        batch.events.iter().map(|e| e.message()).collect()
    }

    #[tokio::test]
    async fn a_request_is_answered_once_its_events_are_delivered() {
        let mut web = start("address: x:1\ndecoding: json\npath: /ingest", 4).await;
        let body =
            b"{\"message\":\"one\"}\r\n\n{\"message\":\"two\",\"level\":\"info\"}\n".to_vec();
        let client = tokio::spawn(send(web.address, "POST", "/ingest", "", body));
        let batch = web.batches.recv().await.unwrap();
        assert_eq!(messages(&batch), ["one", "two"]);
        assert_eq!(
            batch.events[1].fields.get("level"),
            Some(&Value::Str("info".into()))
        );
        assert!(batch.events[0].origin.stream.starts_with("127.0.0.1:"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!client.is_finished(), "answered before the sink delivered");
        batch.delivered();
        let (status, answer) = client.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(answer.ends_with("2 events delivered\n"), "{answer}");
        assert_eq!(
            web.metrics
                .component("web")
                .counter("requests_accepted")
                .get(),
            1
        );
        web.stop().await;
    }

    #[tokio::test]
    async fn large_requests_go_in_several_batches_and_wait_for_all() {
        let mut web = start("address: x:1", 8).await;
        let lines: Vec<String> = (0..MAX_BATCH_EVENTS + 10)
            .map(|i| format!("line {i}"))
            .collect();
        let body = (lines.join("\n") + "\n").into_bytes();
        let client = tokio::spawn(send(web.address, "POST", "/", "", body));
        let first = web.batches.recv().await.unwrap();
        let second = web.batches.recv().await.unwrap();
        assert_eq!(first.len(), MAX_BATCH_EVENTS);
        let rest: Vec<String> = (MAX_BATCH_EVENTS..MAX_BATCH_EVENTS + 10)
            .map(|i| format!("line {i}"))
            .collect();
        assert_eq!(messages(&second), rest);
        second.delivered();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !client.is_finished(),
            "answered before every batch was delivered"
        );
        first.delivered();
        assert_eq!(client.await.unwrap().0, 200);
        web.stop().await;
    }

    #[tokio::test]
    async fn a_sink_that_gives_up_makes_a_500() {
        let mut web = start("address: x:1", 4).await;
        let client = tokio::spawn(send(web.address, "POST", "/", "", b"x\n".to_vec()));
        let batch = web.batches.recv().await.unwrap();
        batch.fail();
        drop(batch);
        let (status, answer) = client.await.unwrap();
        assert_eq!(status, 500, "{answer}");
        assert_eq!(web.refused("failed"), 1);
        web.stop().await;
    }

    #[tokio::test]
    async fn refusals_send_nothing() {
        let mut web = start(
            "address: x:1\ndecoding: json\npath: /ingest\nmax_body_bytes: 64\nauth_token: t0k",
            4,
        )
        .await;
        let auth = "Authorization: Bearer t0k\r\n";
        let (status, answer) = send(web.address, "POST", "/other", auth, b"{}".to_vec()).await;
        assert_eq!(status, 404, "{answer}");
        let (status, answer) = send(web.address, "GET", "/ingest", auth, Vec::new()).await;
        assert_eq!(status, 405, "{answer}");
        assert!(answer.to_lowercase().contains("allow: post"), "{answer}");
        let (status, answer) = send(web.address, "POST", "/ingest", "", b"{}".to_vec()).await;
        assert_eq!(status, 401, "{answer}");
        assert!(
            answer.to_lowercase().contains("www-authenticate: bearer"),
            "{answer}"
        );
        let wrong = "Authorization: Bearer t0x\r\n";
        let (status, _) = send(web.address, "POST", "/ingest", wrong, b"{}".to_vec()).await;
        assert_eq!(status, 401);
        let big = vec![b' '; 100];
        let (status, answer) = send(web.address, "POST", "/ingest", auth, big).await;
        assert_eq!(status, 413, "{answer}");
        let bad = b"{\"message\":\"a\"}\nnope\n".to_vec();
        let (status, answer) = send(web.address, "POST", "/ingest", auth, bad).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("line 2: not JSON"), "{answer}");
        let encoded = "Authorization: Bearer t0k\r\nContent-Encoding: br\r\n";
        let (status, _) = send(web.address, "POST", "/ingest", encoded, b"{}".to_vec()).await;
        assert_eq!(status, 415);
        assert!(
            web.batches.try_recv().is_err(),
            "a refused request sent events"
        );
        for reason in ["not_found", "method_not_allowed", "too_large", "bad_body"] {
            assert_eq!(web.refused(reason), 1, "{reason}");
        }
        assert_eq!(web.refused("unauthorized"), 2);

        // The right token on the right path is taken.
        let client = tokio::spawn(send(
            web.address,
            "POST",
            "/ingest",
            auth,
            b"{\"message\":\"ok\"}".to_vec(),
        ));
        web.batches.recv().await.unwrap().delivered();
        assert_eq!(client.await.unwrap().0, 200);
        web.stop().await;
    }

    #[tokio::test]
    async fn gzip_bodies_are_read_and_bombs_refused() {
        let gzip = |data: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let mut web = start("address: x:1\nmax_body_bytes: 4096", 4).await;
        let gzipped = "Content-Encoding: gzip\r\n";
        let client = tokio::spawn(send(web.address, "POST", "/", gzipped, gzip(b"a\nb\n")));
        let batch = web.batches.recv().await.unwrap();
        assert_eq!(messages(&batch), ["a", "b"]);
        batch.delivered();
        assert_eq!(client.await.unwrap().0, 200);

        let bomb = gzip(&vec![b'a'; 1_000_000]);
        assert!(bomb.len() < 4096);
        let (status, answer) = send(web.address, "POST", "/", gzipped, bomb).await;
        assert_eq!(status, 413, "{answer}");
        let (status, answer) = send(web.address, "POST", "/", gzipped, b"not gzip".to_vec()).await;
        assert_eq!(status, 400, "{answer}");
        assert!(web.batches.try_recv().is_err());
        web.stop().await;
    }

    #[tokio::test]
    async fn a_backed_up_pipeline_answers_503_and_so_does_shutdown() {
        // One batch fills the channel, and nothing reads it.
        let web = start("address: x:1\nbackpressure_timeout_ms: 100", 1).await;
        let first = tokio::spawn(send(web.address, "POST", "/", "", b"first\n".to_vec()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, answer) = send(web.address, "POST", "/", "", b"second\n".to_vec()).await;
        assert_eq!(status, 503, "{answer}");
        assert!(answer.contains("backed up"), "{answer}");
        assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
        assert_eq!(web.refused("backed_up"), 1);
        assert!(
            !first.is_finished(),
            "the first request waits for its delivery"
        );

        // At shutdown the first request's batch is dropped undelivered (lost): 503, and the
        // source returns.
        let metrics = web.metrics.clone();
        web.stop().await;
        let (status, answer) = tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(
            metrics
                .component("web")
                .counter_with_reason("requests_refused", "lost")
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_request_still_sending_at_shutdown_gets_503() {
        let web = start("address: x:1\nbackpressure_timeout_ms: 60000", 1).await;
        let first = tokio::spawn(send(web.address, "POST", "/", "", b"first\n".to_vec()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The channel is full: this one waits to send, far from its timeout.
        let second = tokio::spawn(send(web.address, "POST", "/", "", b"second\n".to_vec()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        web.shutdown.trigger();
        let (status, answer) = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 503, "{answer}");
        assert!(answer.contains("shutting down"), "{answer}");
        web.stop().await;
        assert_eq!(first.await.unwrap().0, 503);
    }
}

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
mod tests;

//! The `webhook` sink: posts events to an HTTP endpoint, such as an on-call or chat webhook.
//!
//! Events are gathered into requests of up to `max_events` (or `max_bytes`), sent once full or
//! `timeout_secs` after their first event, with up to `concurrency` requests in flight. A
//! request is acknowledged once the endpoint answers 2xx. Connection errors, timeouts, 408,
//! 429 and 5xx are retried with exponential backoff and jitter (a `Retry-After` header, in
//! seconds or as a date, sets the wait instead), forever unless `max_retries` is set; other
//! answers (400, 401, 404, ...) cannot improve by resending, so the request's events are
//! counted in `events_dropped{reason=rejected}`, logged, and reported failed to their source.
//!
//! While requests are being retried, new events wait: once `concurrency` requests are in
//! flight the sink stops reading, its input channel fills and the pipeline slows down
//! (backpressure) instead of dropping. A request cut by a timeout may have reached the
//! endpoint, so an endpoint can see an event twice, never zero times.

mod body;
mod config;
mod retry;
mod service;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deepsentry_core::codec::Encoding;
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::{AckToken, Sink, SinkContext};
use reqwest::header::HeaderValue;
use tokio::task::JoinSet;

pub use body::{Body, WebhookEncodings};
pub use config::{HttpMethod, WebhookSinkConfig};
pub use retry::{judge_status, parse_retry_after, Backoff, Verdict};

use service::{shown, Request, Shared, REPORT_INTERVAL};

/// A built `webhook` sink.
#[derive(Debug)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    content_type: Option<HeaderValue>,
    encoding: Encoding,
    max_events: usize,
    max_bytes: usize,
    timeout: Duration,
    concurrency: usize,
    max_retries: Option<u32>,
    backoff: (Duration, Duration),
}

impl WebhookSink {
    /// Starts `request` once fewer than `concurrency` requests are in flight; until then the
    /// sink does not read its input (backpressure).
    async fn dispatch(
        &self,
        shared: &Arc<Shared>,
        in_flight: &mut JoinSet<()>,
        request: Request,
    ) -> anyhow::Result<()> {
        while in_flight.len() >= self.concurrency {
            if let Some(done) = in_flight.join_next().await {
                done.context("a webhook request task failed")?;
            }
        }
        in_flight.spawn(shared.clone().deliver(request));
        Ok(())
    }
}

#[async_trait]
impl Sink for WebhookSink {
    async fn run(self: Box<Self>, mut cx: SinkContext) -> anyhow::Result<()> {
        let shared = Arc::new(Shared {
            sink: cx.id.clone(),
            client: self.client.clone(),
            url: self.url.clone(),
            shown_url: shown(&self.url),
            method: self.method.clone(),
            content_type: self.content_type.clone(),
            max_retries: self.max_retries,
            backoff: self.backoff,
            delivered: cx.metrics.counter("events_delivered"),
            rejected: cx.metrics.dropped("rejected"),
            exhausted: cx.metrics.dropped("retries_exhausted"),
            metrics: cx.metrics.clone(),
            outage: Mutex::default(),
            rejections: LogRateLimit::new(REPORT_INTERVAL),
            give_ups: LogRateLimit::new(REPORT_INTERVAL),
        });
        let mut in_flight = JoinSet::new();
        let mut body = Body::new(self.encoding);
        // The acknowledgements of the events in `body`.
        let mut body_acks: Vec<AckToken> = Vec::new();
        // When `body` must go even if it is not full: `timeout` after its first event.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = tokio::select! {
                batch = cx.input.recv() => batch,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    deadline = None;
                    let request = take_request(&mut body, &mut body_acks);
                    self.dispatch(&shared, &mut in_flight, request).await?;
                    continue;
                }
            };
            let Some(mut batch) = next else { break };
            let acks = batch.take_acks();
            for event in &batch.events {
                if body.is_empty() {
                    deadline = Some(tokio::time::Instant::now() + self.timeout);
                }
                body.push(event);
                if body.events() >= self.max_events || body.len() >= self.max_bytes {
                    body_acks.extend(acks.iter().cloned());
                    deadline = None;
                    let request = take_request(&mut body, &mut body_acks);
                    self.dispatch(&shared, &mut in_flight, request).await?;
                }
            }
            if body.is_empty() {
                // Every event of the batch left in requests holding copies of its
                // acknowledgements (or it had none): these originals have nothing left to do.
                acks.iter().for_each(AckToken::done);
            } else {
                body_acks.extend(acks);
            }
        }
        // Input closed (end of input or shutdown): flush what is pending, then wait for every
        // request in flight.
        if !body.is_empty() {
            let request = take_request(&mut body, &mut body_acks);
            self.dispatch(&shared, &mut in_flight, request).await?;
        }
        while let Some(done) = in_flight.join_next().await {
            done.context("a webhook request task failed")?;
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn take_request(body: &mut Body, acks: &mut Vec<AckToken>) -> Request {
    Request {
        events: body.events(),
        body: body.take().into(),
        acks: std::mem::take(acks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::error_chain;
    use deepsentry_core::{BuildContext, SinkConfig};

    fn config(yaml: &str) -> Result<WebhookSinkConfig, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    async fn build(yaml: &str) -> anyhow::Result<Box<dyn Sink>> {
        let cx = BuildContext {
            id: "alerts".into(),
            data_dir: std::env::temp_dir(),
            metrics: Default::default(),
        };
        config(yaml)?.build(&cx).await
    }

    #[test]
    fn defaults() {
        let config = config("url: http://127.0.0.1:9/hook").unwrap();
        assert_eq!(config.method, HttpMethod::Post);
        assert_eq!(config.encoding.get(), Encoding::Json);
        assert_eq!(config.max_events, None);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.max_retries, None);
        assert_eq!(config.timeout_secs, 1.0);
        assert_eq!(config.request_timeout_secs, 10.0);
    }

    #[test]
    fn unknown_keys_and_choices_list_the_valid_ones() {
        let err = config("url: http://x/\nencoding: yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`json_array`"), "{err}");
        let err = config("url: http://x/\nmethod: get")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`post`"), "{err}");
        let err = config("url: http://x/\nretries: 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`max_retries`"), "{err}");
    }

    #[tokio::test]
    async fn bad_settings_are_refused_at_build() {
        for (yaml, expected) in [
            ("url: ftp://example.com/", "scheme `ftp`"),
            ("url: not a url", "is not a URL"),
            (
                "url: http://x/\nheaders: {'bad header': v}",
                "not a valid header name",
            ),
            ("url: http://x/\nmax_events: 0", "`max_events`"),
            ("url: http://x/\nconcurrency: 0", "`concurrency`"),
            (
                "url: http://x/\nrequest_timeout_secs: 0",
                "`request_timeout_secs`",
            ),
            (
                "url: http://x/\nretry_initial_backoff_secs: 60",
                "must not exceed",
            ),
            ("url: http://x/\nca_file: /no/such/ca.pem", "`ca_file`"),
        ] {
            let Err(err) = build(yaml).await else {
                panic!("`{yaml}` was accepted");
            };
            assert!(format!("{err:#}").contains(expected), "{yaml}: {err:#}");
        }
        assert!(build("url: https://alerts.example.com/hook").await.is_ok());
    }

    #[test]
    fn error_chains_name_the_cause() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = Wrapper(std::io::Error::other("dns error"));
        assert_eq!(error_chain(&wrapped), "error sending request: dns error");
    }
}

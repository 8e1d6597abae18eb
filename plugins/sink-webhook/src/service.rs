//! Sending one request: retries with backoff, `Retry-After`, redirects and rejections, and
//! the log lines and counters of an outage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{judge_status, parse_retry_after, Backoff, Verdict};
use deepsentry_core::metrics::{ComponentMetrics, Counter};
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::AckToken;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};

/// How often a persisting failure is logged again.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) fn shown(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or(""))
}

/// Where a redirect points, as [`shown`] (a relative location resolved against `base`).
pub(crate) fn redirect_target(base: &reqwest::Url, location: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(location.as_bytes());
    match base.join(&text) {
        Ok(url) => shown(&url),
        Err(_) => "an unreadable location".to_string(),
    }
}

/// The events of one request, ready to send: its body and the acknowledgements of the source
/// batches its events came from.
pub(crate) struct Request {
    pub(crate) body: bytes::Bytes,
    pub(crate) events: usize,
    pub(crate) acks: Vec<AckToken>,
}

impl Request {
    /// Tells the sources these events will not be delivered.
    pub(crate) fn fail(&self) {
        self.acks.iter().for_each(AckToken::fail);
    }

    /// Tells the sources these events were delivered.
    pub(crate) fn delivered(&self) {
        self.acks.iter().for_each(AckToken::done);
    }
}

/// An endpoint failing: the first failure is logged, then at most one line per
/// [`REPORT_INTERVAL`] with how many failures were not logged, and one line when it recovers.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    /// Since when requests fail, and when the next line may be logged.
    pub(crate) failing: Option<(Instant, Instant)>,
    /// Failures not logged since the last line.
    pub(crate) unreported: u64,
}

/// What every request task shares.
pub(crate) struct Shared {
    pub(crate) sink: String,
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
    /// The URL as logs show it (see [`shown`]).
    pub(crate) shown_url: String,
    pub(crate) method: reqwest::Method,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) backoff: (Duration, Duration),
    pub(crate) delivered: Counter,
    pub(crate) rejected: Counter,
    pub(crate) exhausted: Counter,
    pub(crate) metrics: ComponentMetrics,
    pub(crate) outage: Mutex<Outage>,
    pub(crate) rejections: LogRateLimit,
    pub(crate) give_ups: LogRateLimit,
}

/// The text of an error and every error behind it: reqwest's own message names only the URL,
/// the cause (refused, DNS, TLS) is further down the chain.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// At most this much of a refusing answer's body goes into the log line.
pub(crate) const ANSWER_EXCERPT: usize = 200;

impl Shared {
    /// Sends one request until the endpoint takes it, refuses it, or the retries run out.
    pub(crate) async fn deliver(self: Arc<Self>, request: Request) {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1, jitter_seed());
        let mut attempt: u32 = 0;
        loop {
            let mut builder = self
                .client
                .request(self.method.clone(), self.url.clone())
                .body(request.body.clone());
            if let Some(content_type) = &self.content_type {
                builder = builder.header(CONTENT_TYPE, content_type.clone());
            }
            let (reason, detail, retry_after) = match builder.send().await {
                Ok(response) => {
                    let status = response.status();
                    match judge_status(status.as_u16()) {
                        Verdict::Delivered => {
                            // Reading the answer to its end lets the connection be reused.
                            let _ = response.bytes().await;
                            self.delivered.add(request.events as u64);
                            request.delivered();
                            self.recovered();
                            return;
                        }
                        Verdict::Rejected => {
                            let location = status
                                .is_redirection()
                                .then(|| response.headers().get(reqwest::header::LOCATION))
                                .flatten()
                                .map(|l| redirect_target(&self.url, l));
                            let mut answer = excerpt(response).await;
                            if let Some(location) = location {
                                answer = format!("(redirects to {location}) {answer}");
                            }
                            self.rejected(&request, status, &answer);
                            return;
                        }
                        Verdict::Retry(reason) => {
                            let retry_after = response
                                .headers()
                                .get(RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                            let answer = excerpt(response).await;
                            (reason, format!("HTTP {status} {answer}"), retry_after)
                        }
                    }
                }
                Err(error) => {
                    // reqwest's message names the whole URL.
                    let error = error.without_url();
                    let reason = if error.is_timeout() {
                        "timeout"
                    } else {
                        "connection"
                    };
                    (reason, error_chain(&error), None)
                }
            };
            self.metrics
                .counter_with_reason("send_errors", reason)
                .inc();
            if self.max_retries.is_some_and(|max| attempt >= max) {
                self.gave_up(&request, attempt, &detail);
                return;
            }
            let wait = retry_after.unwrap_or_else(|| backoff.delay(attempt));
            self.failed(&detail, request.events, wait);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    pub(crate) fn failed(&self, detail: &str, events: usize, wait: Duration) {
        let now = Instant::now();
        let mut outage = self.outage.lock().expect("outage lock");
        match outage.failing {
            None => {
                tracing::warn!(
                    sink = %self.sink,
                    url = %self.shown_url,
                    events,
                    "cannot deliver to the webhook ({detail}); retrying in {:.2} s, events wait",
                    wait.as_secs_f64()
                );
                outage.failing = Some((now, now + REPORT_INTERVAL));
            }
            Some((since, next_report)) if now >= next_report => {
                tracing::warn!(
                    sink = %self.sink,
                    url = %self.shown_url,
                    failures = outage.unreported + 1,
                    "the webhook still fails after {:.0} s ({detail}); events wait",
                    since.elapsed().as_secs_f64()
                );
                outage.failing = Some((since, now + REPORT_INTERVAL));
                outage.unreported = 0;
            }
            Some(_) => outage.unreported += 1,
        }
    }

    pub(crate) fn recovered(&self) {
        let mut outage = self.outage.lock().expect("outage lock");
        if let Some((since, _)) = outage.failing.take() {
            outage.unreported = 0;
            tracing::info!(
                sink = %self.sink,
                url = %self.shown_url,
                "the webhook takes events again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }

    pub(crate) fn rejected(&self, request: &Request, status: reqwest::StatusCode, answer: &str) {
        self.rejected.add(request.events as u64);
        request.fail();
        self.recovered();
        if let Some(not_logged) = self.rejections.check() {
            tracing::warn!(
                sink = %self.sink,
                url = %self.shown_url,
                events = request.events,
                earlier_rejections_not_logged = not_logged,
                "the webhook refused a request with HTTP {status} {answer}; its events are not \
                 retried and are counted in events_dropped{{reason=rejected}}"
            );
        }
    }

    pub(crate) fn gave_up(&self, request: &Request, attempt: u32, detail: &str) {
        self.exhausted.add(request.events as u64);
        request.fail();
        if let Some(not_logged) = self.give_ups.check() {
            tracing::error!(
                sink = %self.sink,
                url = %self.shown_url,
                events = request.events,
                earlier_give_ups_not_logged = not_logged,
                "giving up after {attempt} retries ({detail}); the events are counted in \
                 events_dropped{{reason=retries_exhausted}}"
            );
        }
    }
}

/// The start of an answer's body, on one line, for a log line.
pub(crate) async fn excerpt(response: reqwest::Response) -> String {
    let body = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(ANSWER_EXCERPT)]);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        String::new()
    } else {
        format!("`{text}`")
    }
}

/// A different jitter sequence for every request, so that requests failing together retry
/// apart.
pub(crate) fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    nanos ^ (std::process::id() as u64).rotate_left(32)
}

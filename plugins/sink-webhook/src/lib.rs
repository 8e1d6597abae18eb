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
mod retry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use async_trait::async_trait;
use deepsentry_core::metrics::{ComponentMetrics, Counter};
use deepsentry_core::ratelimit::LogRateLimit;
use deepsentry_core::{AckToken, BuildContext, Sink, SinkConfig, SinkContext};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use tokio::task::JoinSet;

pub use body::{Body, WebhookEncoding};
pub use retry::{judge_status, parse_retry_after, Backoff, Verdict};

/// The HTTP method of the requests.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    /// `POST` (the default).
    #[default]
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

impl From<HttpMethod> for reqwest::Method {
    fn from(method: HttpMethod) -> Self {
        match method {
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
        }
    }
}

/// Settings of the `webhook` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The endpoint, `http://` or `https://` (required).
    pub url: String,
    /// `post` (default), `put` or `patch`.
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra request headers. Values take `${VAR}` from the environment like every config
    /// value, e.g. `Authorization: "Bearer ${ALERT_TOKEN}"`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `json` (default), `json_array` or `text`.
    #[serde(default)]
    pub encoding: WebhookEncoding,
    /// The most events in one request. Default 1 for `json` and `text`, 100 for `json_array`.
    #[serde(default)]
    pub max_events: Option<usize>,
    /// A request is sent once its body reaches this many bytes. Default 1,000,000.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// The longest an event waits for its request to fill, in seconds. Default 1.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// How long one request may take before it is abandoned and retried, in seconds.
    /// Default 10.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: f64,
    /// The most requests in flight at once. Default 4; 1 keeps requests in order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How many times a request is retried before its events are dropped. Default: no limit.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The first retry's wait, in seconds; it doubles with each retry. Default 0.5.
    #[serde(default = "default_retry_initial_backoff_secs")]
    pub retry_initial_backoff_secs: f64,
    /// The longest wait between retries, in seconds. Default 30.
    #[serde(default = "default_retry_max_backoff_secs")]
    pub retry_max_backoff_secs: f64,
    /// A PEM file of extra CA certificates to trust for `https://` (an internal CA), on top of
    /// the built-in web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_max_bytes() -> usize {
    1_000_000
}

fn default_timeout_secs() -> f64 {
    1.0
}

fn default_request_timeout_secs() -> f64 {
    10.0
}

fn default_concurrency() -> usize {
    4
}

fn default_retry_initial_backoff_secs() -> f64 {
    0.5
}

fn default_retry_max_backoff_secs() -> f64 {
    30.0
}

deepsentry_core::register_sink!(
    "webhook",
    "Posts events to an HTTP endpoint (json, json_array, text); retries with backoff, never drops",
    WebhookSinkConfig
);

/// How often a persisting failure is logged again.
const REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// A built `webhook` sink.
#[derive(Debug)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    content_type: Option<HeaderValue>,
    encoding: WebhookEncoding,
    max_events: usize,
    max_bytes: usize,
    timeout: Duration,
    concurrency: usize,
    max_retries: Option<u32>,
    backoff: (Duration, Duration),
}

fn positive_secs(value: f64, key: &str) -> anyhow::Result<Duration> {
    ensure!(
        value.is_finite() && value > 0.0,
        "`{key}` must be a positive number of seconds, not {value}"
    );
    Ok(Duration::from_secs_f64(value))
}

/// How a URL appears in logs: scheme, host and port only. Credentials, a token in the path
/// or the query never reach a log line.
fn shown(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or(""))
}

/// Where a redirect points, as [`shown`] (a relative location resolved against `base`).
fn redirect_target(base: &reqwest::Url, location: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(location.as_bytes());
    match base.join(&text) {
        Ok(url) => shown(&url),
        Err(_) => "an unreadable location".to_string(),
    }
}

fn parse_url(url: &str) -> anyhow::Result<reqwest::Url> {
    // The URL may hold credentials or a token: errors name the problem, never the URL.
    let parsed = reqwest::Url::parse(url).context("`url` is not a URL")?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => bail!("`url`: scheme `{other}` is not supported; valid: `http`, `https`"),
    }
    ensure!(parsed.host().is_some(), "`url` has no host");
    Ok(parsed)
}

fn parse_headers(headers: &BTreeMap<String, String>) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("`headers`: `{name}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(value)
            .with_context(|| format!("`headers.{name}`: the value is not a valid header value"))?;
        if header == reqwest::header::AUTHORIZATION {
            value.set_sensitive(true);
        }
        map.insert(header, value);
    }
    Ok(map)
}

#[async_trait]
impl SinkConfig for WebhookSinkConfig {
    async fn build(&self, _cx: &BuildContext) -> anyhow::Result<Box<dyn Sink>> {
        let url = parse_url(&self.url)?;
        let headers = parse_headers(&self.headers)?;
        let max_events = self
            .max_events
            .unwrap_or_else(|| self.encoding.default_max_events());
        ensure!(max_events >= 1, "`max_events` must be at least 1");
        ensure!(self.max_bytes >= 1, "`max_bytes` must be at least 1");
        ensure!(self.concurrency >= 1, "`concurrency` must be at least 1");
        let timeout = positive_secs(self.timeout_secs, "timeout_secs")?;
        let request_timeout = positive_secs(self.request_timeout_secs, "request_timeout_secs")?;
        let initial = positive_secs(
            self.retry_initial_backoff_secs,
            "retry_initial_backoff_secs",
        )?;
        let max = positive_secs(self.retry_max_backoff_secs, "retry_max_backoff_secs")?;
        ensure!(
            initial <= max,
            "`retry_initial_backoff_secs` must not exceed `retry_max_backoff_secs`"
        );
        let content_type = (!headers.contains_key(CONTENT_TYPE))
            .then(|| HeaderValue::from_static(self.encoding.content_type(max_events)));
        let mut client = reqwest::Client::builder()
            .use_rustls_tls()
            // A redirect would resend the alerts as a bodiless GET, with the secret headers,
            // perhaps to another host: it is an answer like a 4xx, and said so.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deepsentry/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)));
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("`ca_file`: cannot read {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("`ca_file`: {} holds no PEM certificate", path.display())
            })?;
            ensure!(
                !certificates.is_empty(),
                "`ca_file`: {} holds no PEM certificate",
                path.display()
            );
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build().context("cannot set up the HTTP client")?;
        Ok(Box::new(WebhookSink {
            client,
            url,
            method: self.method.into(),
            content_type,
            encoding: self.encoding,
            max_events,
            max_bytes: self.max_bytes,
            timeout,
            concurrency: self.concurrency,
            max_retries: self.max_retries,
            backoff: (initial, max),
        }))
    }

    async fn check(&self, cx: &BuildContext) -> anyhow::Result<()> {
        // Building opens nothing: it connects when it runs.
        self.build(cx).await.map(drop)
    }
}

/// The events of one request, ready to send: its body and the acknowledgements of the source
/// batches its events came from.
struct Request {
    body: bytes::Bytes,
    events: usize,
    acks: Vec<AckToken>,
}

impl Request {
    /// Tells the sources these events will not be delivered.
    fn fail(&self) {
        self.acks.iter().for_each(AckToken::fail);
    }

    /// Tells the sources these events were delivered.
    fn delivered(&self) {
        self.acks.iter().for_each(AckToken::done);
    }
}

/// An endpoint failing: the first failure is logged, then at most one line per
/// [`REPORT_INTERVAL`] with how many failures were not logged, and one line when it recovers.
#[derive(Debug, Default)]
struct Outage {
    /// Since when requests fail, and when the next line may be logged.
    failing: Option<(Instant, Instant)>,
    /// Failures not logged since the last line.
    unreported: u64,
}

/// What every request task shares.
struct Shared {
    sink: String,
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL as logs show it (see [`shown`]).
    shown_url: String,
    method: reqwest::Method,
    content_type: Option<HeaderValue>,
    max_retries: Option<u32>,
    backoff: (Duration, Duration),
    delivered: Counter,
    rejected: Counter,
    exhausted: Counter,
    metrics: ComponentMetrics,
    outage: Mutex<Outage>,
    rejections: LogRateLimit,
    give_ups: LogRateLimit,
}

/// The text of an error and every error behind it: reqwest's own message names only the URL,
/// the cause (refused, DNS, TLS) is further down the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
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
const ANSWER_EXCERPT: usize = 200;

impl Shared {
    /// Sends one request until the endpoint takes it, refuses it, or the retries run out.
    async fn deliver(self: Arc<Self>, request: Request) {
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

    fn failed(&self, detail: &str, events: usize, wait: Duration) {
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

    fn recovered(&self) {
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

    fn rejected(&self, request: &Request, status: reqwest::StatusCode, answer: &str) {
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

    fn gave_up(&self, request: &Request, attempt: u32, detail: &str) {
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
async fn excerpt(response: reqwest::Response) -> String {
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
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    nanos ^ (std::process::id() as u64).rotate_left(32)
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
        assert_eq!(config.encoding, WebhookEncoding::Json);
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

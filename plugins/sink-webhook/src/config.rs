//! The `webhook` sink's configuration: its keys, their checks, and building the sink.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::body::{content_type, default_max_events};
use crate::{WebhookEncodings, WebhookSink};
use anyhow::{bail, ensure, Context};
use async_trait::async_trait;
use deepsentry_core::codec::EncodingConfig;
use deepsentry_core::{BuildContext, Sink, SinkConfig};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;

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
    /// `json` (default), `json_array`, `monitor` (the live monitor's line) or `text` (the raw
    /// line).
    #[serde(default)]
    pub encoding: EncodingConfig<WebhookEncodings>,
    /// The most events in one request. Default 100 for `json_array`, 1 for the others.
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

fn positive_secs(value: f64, key: &str) -> anyhow::Result<Duration> {
    ensure!(
        value.is_finite() && value > 0.0,
        "`{key}` must be a positive number of seconds, not {value}"
    );
    Ok(Duration::from_secs_f64(value))
}

/// How a URL appears in logs: scheme, host and port only. Credentials, a token in the path
/// or the query never reach a log line.
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
            .unwrap_or_else(|| default_max_events(self.encoding.get()));
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
            .then(|| HeaderValue::from_static(content_type(self.encoding.get(), max_events)));
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
            encoding: self.encoding.get(),
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

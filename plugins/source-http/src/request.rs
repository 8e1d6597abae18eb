//! Judging one request: its head (path, method, token, encoding, length), reading and
//! draining its body, and the answers that refuse it.

use crate::{Secret, Shared, DRAIN_BYTES, DRAIN_TIME};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    EXPECT, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Response, StatusCode};

/// Checks a request's head: path, method, token, and what can be told before reading the
/// body (its encoding and declared length). `Ok` says whether the body is gzip.
pub(crate) fn admit(shared: &Shared, parts: &Parts) -> Result<bool, Refusal> {
    let config = &shared.config;
    if let Some(path) = &config.path {
        if parts.uri.path() != path.as_str() {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("not found; this source takes POST {path}"),
            ));
        }
    }
    if parts.method != Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {} is not allowed; only POST", parts.method),
        ));
    }
    if let Some(token) = &config.auth_token {
        if !authorized(&parts.headers, token) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong token: send `Authorization: Bearer <token>`",
            ));
        }
    }
    if shared.shutdown.is_triggered() {
        return Err(Refusal::shutting_down());
    }
    let gzip = gzipped(&parts.headers)?;
    let max = config.max_body_bytes;
    if declared_length(&parts.headers).is_some_and(|length| length > max as u64) {
        return Err(Refusal::too_large(max));
    }
    Ok(gzip)
}

/// Reads a body, refusing it as soon as it passes `max` bytes.
pub(crate) async fn read_body(body: &mut Incoming, max: usize) -> Result<Bytes, Refusal> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "unreadable",
                format!("cannot read the body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(Refusal::too_large(max));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards what is left of a refused request's body, up to [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`], so the client reads the answer rather than a reset connection.
pub(crate) async fn drain(body: &mut Incoming) {
    let discard = async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                left = left.saturating_sub(data.len());
                if left == 0 {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Whether the client waits for `100 Continue` before sending its body.
pub(crate) fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The body's length as the client declares it, if it does.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the body is gzip-compressed (`Content-Encoding: gzip`); a refusal for an encoding
/// this source cannot read.
pub(crate) fn gzipped(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let encoding = value.to_str().unwrap_or("(unreadable)").trim();
    if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        Ok(true)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{encoding}` is not supported; send gzip or no encoding"),
        ))
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>` with the expected token.
pub(crate) fn authorized(headers: &HeaderMap, expected: &Secret) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()))
        .is_some_and(|given| same_secret(given, expected.expose().as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(space);
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Some(token.trim_ascii())
    } else {
        None
    }
}

/// Compares a secret in time that depends on its length only, never on where the first
/// difference is, so a client cannot guess a token byte by byte from answer times. (The
/// length of the token is not what keeps it secret.)
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let difference = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// A plain-text answer.
pub(crate) fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Why a request is not answered `200`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// The `reason` label of `requests_refused`.
    pub(crate) reason: &'static str,
    /// What the client is told and the log says.
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn too_large(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than max_body_bytes ({max} bytes); send less at once"),
        )
    }

    pub(crate) fn bad_body(why: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_body", why)
    }

    pub(crate) fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the pipeline is shutting down; send the events again later",
        )
    }

    /// The answer, closing the connection: after a refusal the client's body may be partly
    /// unread, and a client told to back off should reconnect anyway.
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = reply(self.status, format!("{}\n", self.message));
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        // What the status asks the client to do next: the method to use, how to
        // authenticate, when to come back.
        let advice = if self.status == StatusCode::METHOD_NOT_ALLOWED {
            Some((ALLOW, "POST"))
        } else if self.status == StatusCode::UNAUTHORIZED {
            Some((WWW_AUTHENTICATE, "Bearer"))
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            Some((RETRY_AFTER, "1"))
        } else {
            None
        };
        if let Some((name, value)) = advice {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

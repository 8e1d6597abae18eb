//! When to send a request again, and how long to wait first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deepsentry_core::rng::SplitMix64;

/// The longest `Retry-After` the sink honours; a larger one is cut to this.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// What an HTTP status means for the events of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the endpoint has the events.
    Delivered,
    /// The endpoint may take them later: 408, 429 and 5xx. The string labels the
    /// `send_errors` metric.
    Retry(&'static str),
    /// The endpoint refused them (any other status: a redirect, which is not followed, 501
    /// Not Implemented and 505 HTTP Version Not Supported included): sending the same request
    /// again cannot help.
    Rejected,
}

/// Judges an answer by its status code.
pub fn judge_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 => Verdict::Retry("timeout"),
        429 => Verdict::Retry("throttled"),
        501 | 505 => Verdict::Rejected,
        500..=599 => Verdict::Retry("server_error"),
        _ => Verdict::Rejected,
    }
}

/// Exponential backoff with jitter: attempt `n` waits between half and all of
/// `initial * 2^n` (capped at `max`), so that many senders failing together do not come back
/// together.
#[derive(Debug, Clone)]
pub struct Backoff {
    doubling: deepsentry_core::backoff::Backoff,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff starting at `initial`, never above `max`; `seed` drives the jitter.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            doubling: deepsentry_core::backoff::Backoff::new(initial, max),
            rng: SplitMix64::new(seed),
        }
    }

    /// How long to wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let ceiling = self.doubling.ceiling(attempt);
        let fraction = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ceiling / 2 + (ceiling / 2).mul_f64(fraction)
    }
}

/// Reads a `Retry-After` header: a number of seconds, or an HTTP date (RFC 9110), relative to
/// `now`. `None` when it is neither; a date in the past means "now". Capped at
/// [`RETRY_AFTER_CAP`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_judged_like_other_http_senders() {
        assert_eq!(judge_status(200), Verdict::Delivered);
        assert_eq!(judge_status(204), Verdict::Delivered);
        assert_eq!(judge_status(429), Verdict::Retry("throttled"));
        assert_eq!(judge_status(408), Verdict::Retry("timeout"));
        assert_eq!(judge_status(500), Verdict::Retry("server_error"));
        assert_eq!(judge_status(503), Verdict::Retry("server_error"));
        assert_eq!(judge_status(501), Verdict::Rejected);
        assert_eq!(judge_status(400), Verdict::Rejected);
        assert_eq!(judge_status(401), Verdict::Rejected);
        assert_eq!(judge_status(404), Verdict::Rejected);
        assert_eq!(judge_status(302), Verdict::Rejected);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        for (attempt, ceiling_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (30, 1000),
        ] {
            let ceiling = Duration::from_millis(ceiling_ms);
            let delays: Vec<Duration> = (0..50).map(|_| backoff.delay(attempt)).collect();
            assert!(
                delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
                "attempt {attempt}: {delays:?}"
            );
            let spread = delays.iter().max().unwrap().as_secs_f64()
                - delays.iter().min().unwrap().as_secs_f64();
            assert!(
                spread > ceiling.as_secs_f64() / 4.0,
                "no jitter: {delays:?}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-06T08:49:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Fri, 06 Nov 2026 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Fri, 06 Nov 2026 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("86400", now), Some(RETRY_AFTER_CAP));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}

//! Keeping a recurring log line from flooding the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets a recurring log line through at most once per interval and counts the occurrences held
/// back in between, so the next line can say how many there were.
#[derive(Debug)]
pub struct LogRateLimit {
    interval: Duration,
    /// When the last line was let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogRateLimit {
    /// A limit of one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were held back since
    /// the last logged one; `None` when it should be held back (and is counted).
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().expect("rate limit lock");
        match state.0 {
            Some(last) if now < last + self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let held_back = state.1;
                *state = (Some(now), 0);
                Some(held_back)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let limit = LogRateLimit::new(Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(limit.check_at(start), Some(0));
        assert_eq!(limit.check_at(start + Duration::from_secs(1)), None);
        assert_eq!(limit.check_at(start + Duration::from_secs(29)), None);
        assert_eq!(limit.check_at(start + Duration::from_secs(30)), Some(2));
        assert_eq!(limit.check_at(start + Duration::from_secs(31)), None);
        assert_eq!(limit.check_at(start + Duration::from_secs(61)), Some(1));
    }
}

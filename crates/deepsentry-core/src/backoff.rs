//! Waiting longer after each failure in a row: how sinks and clients retry a peer that is down
//! without hammering it.

use std::time::Duration;

/// A doubling wait: `initial` after the first failure, twice as long after each further one,
/// never more than `max`; after a success, [`Backoff::reset`] starts again from `initial`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// How long to wait after this failure; the next one waits twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// A success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }

    /// The wait before retry number `attempt` (0 for the first), for callers that count
    /// attempts themselves: `initial * 2^attempt`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_success() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000].map(ms));
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(100));
        assert_eq!(backoff.ceiling(0), ms(100));
        assert_eq!(backoff.ceiling(3), ms(800));
        assert_eq!(backoff.ceiling(60), ms(1000));
        // No cap to speak of: doubling saturates instead of overflowing.
        let mut open = Backoff::new(ms(100), Duration::MAX);
        for _ in 0..200 {
            open.next_delay();
        }
        assert_eq!(open.next_delay(), Duration::MAX);
    }
}

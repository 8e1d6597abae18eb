//! The adaptive threshold: mean + `multiplier` x standard deviation of the last `window_size`
//! scores, so the bar follows a drifting baseline, never below a floor learned in training.

use std::collections::VecDeque;

/// Rolling statistics of recent normal scores and the threshold they give.
#[derive(Debug, Clone)]
pub struct AdaptiveThreshold {
    window: VecDeque<f64>,
    window_size: usize,
    multiplier: f64,
    min_samples: usize,
    floor: f64,
    exclude_anomalies: bool,
    /// For each of the last `window_size` scores judged, whether it was kept out of the window.
    kept_out: VecDeque<bool>,
    /// How many of `kept_out` are true.
    kept_out_count: usize,
    sum: f64,
    sum_sq: f64,
    pushes: u64,
}

/// The verdict for one score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The threshold the score was compared with.
    pub threshold: f64,
    /// Whether the score is above it (never during warm-up).
    pub is_anomaly: bool,
}

impl AdaptiveThreshold {
    /// A threshold over the last `window_size` scores with `multiplier` standard deviations,
    /// silent until `min_samples` scores were seen, never below `floor`. With
    /// `exclude_anomalies`, flagged scores do not enter the window (an incident does not raise
    /// its own bar) while they are fewer than half of the last `window_size` scores judged:
    /// anomalies are the exception, and when most scores are above the bar the stream's
    /// baseline has moved (a log the model knows little of, a change that lasts). Kept out, its
    /// scores would never reach the window and every line would be flagged from then on;
    /// let in, the bar follows them.
    pub fn new(
        window_size: usize,
        multiplier: f64,
        min_samples: usize,
        floor: f64,
        exclude_anomalies: bool,
    ) -> Self {
        Self {
            window: VecDeque::with_capacity(window_size.max(1)),
            window_size: window_size.max(1),
            multiplier,
            min_samples: min_samples.min(window_size.max(1)),
            floor,
            exclude_anomalies,
            kept_out: VecDeque::with_capacity(window_size.max(1)),
            kept_out_count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            pushes: 0,
        }
    }

    /// Sets the floor (a new model's); the recent scores stay.
    pub fn set_floor(&mut self, floor: f64) {
        self.floor = floor;
    }

    /// Mean and (population) standard deviation of the window.
    pub fn stats(&self) -> (f64, f64) {
        let n = self.window.len() as f64;
        if n == 0.0 {
            return (0.0, 0.0);
        }
        let mean = self.sum / n;
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        (mean, variance.sqrt())
    }

    /// The current threshold: `max(floor, mean + multiplier * std)`.
    pub fn threshold(&self) -> f64 {
        self.threshold_above(self.floor)
    }

    /// The rolling part of the threshold, `mean + multiplier * std`, never below `floor`.
    fn threshold_above(&self, floor: f64) -> f64 {
        let (mean, std) = self.stats();
        (mean + self.multiplier * std).max(floor)
    }

    /// Judges `score` against the current threshold, then adds it to the window unless it is
    /// above the threshold and anomalies are excluded. During the warm-up nothing is flagged,
    /// and the few scores seen say little, so only a learned (positive) floor keeps scores out
    /// of the window then: a burst of anomalies at start-up cannot set the baseline.
    pub fn observe(&mut self, score: f64) -> Verdict {
        self.observe_above(score, self.floor)
    }

    /// [`AdaptiveThreshold::observe`] with another floor, for a score of a kind calibrated
    /// apart from the learned one (the surprise of a template learned online). It joins the
    /// window like any score: the rolling part follows everything the stream scores.
    pub fn observe_above(&mut self, score: f64, floor: f64) -> Verdict {
        let threshold = self.threshold_above(floor);
        let warmed_up = self.window.len() >= self.min_samples;
        let above = if warmed_up {
            score > threshold
        } else {
            floor > 0.0 && score > floor
        };
        let is_anomaly = warmed_up && above;
        let keep_out =
            above && self.exclude_anomalies && 2 * self.kept_out_count < self.window_size;
        self.record(keep_out);
        if !keep_out {
            self.push(score);
        }
        Verdict {
            threshold,
            is_anomaly,
        }
    }

    /// Remembers whether the last score judged was kept out of the window.
    fn record(&mut self, kept_out: bool) {
        if self.kept_out.len() == self.window_size && self.kept_out.pop_front() == Some(true) {
            self.kept_out_count -= 1;
        }
        self.kept_out.push_back(kept_out);
        self.kept_out_count += usize::from(kept_out);
    }

    fn push(&mut self, score: f64) {
        if self.window.len() == self.window_size {
            if let Some(old) = self.window.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.window.push_back(score);
        self.sum += score;
        self.sum_sq += score * score;
        // Running sums drift with floating-point error; recompute them once per window.
        self.pushes += 1;
        if self.pushes % self.window_size as u64 == 0 {
            let (s, q) = self
                .window
                .iter()
                .fold((0.0, 0.0), |(s, q), x| (s + x, q + x * x));
            if (s - self.sum).abs() > 1e-9 * s.abs().max(1.0) {
                self.sum = s;
                self.sum_sq = q;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of scores with exactly the given mean and population std.
    fn scores(mean: f64, std: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| if i % 2 == 0 { mean - std } else { mean + std })
            .collect()
    }

    fn filled(values: &[f64], window: usize) -> AdaptiveThreshold {
        let mut t = AdaptiveThreshold::new(window, 2.5, 10, 0.0, true);
        for &v in values {
            t.observe(v);
        }
        t
    }

    #[test]
    fn seed_example_hour_1() {
        // Mean 0.17, std 0.08 -> 0.17 + 2.5 * 0.08 = 0.37.
        let t = filled(&scores(0.17, 0.08, 100), 100);
        let (mean, std) = t.stats();
        assert!((mean - 0.17).abs() < 1e-9 && (std - 0.08).abs() < 1e-9);
        assert!((t.threshold() - 0.37).abs() < 1e-9);
    }

    #[test]
    fn seed_example_hour_2_after_drift() {
        // The baseline rises to mean 0.27, std 0.09: the threshold follows to 0.495.
        let mut t = filled(&scores(0.17, 0.08, 100), 100);
        for v in scores(0.27, 0.09, 100) {
            t.observe(v);
        }
        assert!((t.threshold() - 0.495).abs() < 1e-9, "{}", t.threshold());
        // A score that was anomalous in hour 1 is normal now.
        assert!(!t.observe(0.45).is_anomaly);
    }

    #[test]
    fn flags_outliers_and_keeps_them_out_of_the_window() {
        let mut t = filled(&scores(0.17, 0.08, 100), 100);
        let before = t.threshold();
        let verdict = t.observe(3.67);
        assert!(verdict.is_anomaly);
        assert_eq!(verdict.threshold, before);
        assert_eq!(t.threshold(), before, "the anomaly did not raise the bar");
    }

    #[test]
    fn anomalies_during_warm_up_do_not_set_the_baseline() {
        let mut t = AdaptiveThreshold::new(100, 2.5, 5, 1.0, true);
        for _ in 0..5 {
            assert!(!t.observe(40.0).is_anomaly, "no alert during warm-up");
        }
        for _ in 0..5 {
            t.observe(0.2);
        }
        assert_eq!(t.threshold(), 1.0);
        assert!(t.observe(40.0).is_anomaly);
    }

    #[test]
    fn a_shift_that_lasts_becomes_the_baseline() {
        let mut t = AdaptiveThreshold::new(100, 2.5, 5, 1.0, true);
        for v in scores(0.2, 0.05, 50) {
            t.observe(v);
        }
        // Every line of the new level is above the bar, so none would enter the window.
        let shifted = scores(3.0, 0.1, 300);
        let flagged: Vec<bool> = shifted.iter().map(|&v| t.observe(v).is_anomaly).collect();
        // An incident is flagged while it is the exception in the last 100 lines...
        assert!(flagged[..50].iter().all(|&f| f), "{flagged:?}");
        // ...and once it is most of them, it is the baseline.
        let late = flagged[200..].iter().filter(|&&f| f).count();
        assert!(late <= 5, "{late} of the last 100 lines still flagged");
        // A new outlier above the new baseline is flagged.
        assert!(t.observe(9.0).is_anomaly);
    }

    #[test]
    fn anomalies_can_be_kept_in_the_window() {
        let mut t = AdaptiveThreshold::new(100, 2.5, 10, 0.0, false);
        for v in scores(0.17, 0.08, 100) {
            t.observe(v);
        }
        let before = t.threshold();
        assert!(t.observe(3.67).is_anomaly);
        assert!(t.threshold() > before);
    }

    #[test]
    fn warm_up_and_floor() {
        let mut t = AdaptiveThreshold::new(100, 2.5, 10, 1.0, true);
        for _ in 0..9 {
            assert!(!t.observe(50.0).is_anomaly, "no alert during warm-up");
        }
        let mut t = AdaptiveThreshold::new(100, 2.5, 5, 1.0, true);
        for _ in 0..50 {
            t.observe(0.001);
        }
        // A constant baseline has std 0: without the floor any noise would alert.
        assert_eq!(t.threshold(), 1.0);
        assert!(!t.observe(0.5).is_anomaly);
        assert!(t.observe(1.5).is_anomaly);
    }
}

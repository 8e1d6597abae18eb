//! The scorer's settings: the `deepsentry` transform's keys.

use regex::Regex;

use crate::novelty::VocabularyLimits;

/// How events are grouped into sessions.
#[derive(Debug, Clone)]
pub enum SessionKey {
    /// One session per source stream (file path, peer, `stdin`).
    Stream,
    /// The regex's first capture group (or whole match) in the message; lines without a
    /// match fall back to their stream.
    Regex(Regex),
    /// The value of a field a previous transform set; falls back to the stream.
    Field(String),
}

impl SessionKey {
    /// The session id a regex key finds in `text`: its first capture group, else its whole
    /// match. `None` where it finds none (the line is in its stream's session) and for the
    /// other keys, which a line's text alone does not name.
    pub fn id_in<'t>(&self, text: &'t str) -> Option<&'t str> {
        match self {
            Self::Regex(re) => re
                .captures(text)
                .and_then(|c| c.get(1).or_else(|| c.get(0)))
                .map(|m| m.as_str()),
            Self::Stream | Self::Field(_) => None,
        }
    }
}

/// What the alerts of new templates are grouped by (those of other reasons are grouped by
/// template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertGrouping {
    /// One group per new template (and its variants).
    Template,
    /// New templates of one severity in one stream within the window are one alert: a deploy
    /// or a reboot that brings many new statements at once is one incident, while a new error
    /// among new informational lines is still an alert of its own.
    #[default]
    Burst,
}

/// Settings of the scorer (the transform's keys).
#[derive(Debug, Clone)]
pub struct ScorerSettings {
    /// Rolling window of scores for the threshold.
    pub window_size: usize,
    /// Standard deviations above the mean.
    pub threshold_multiplier: f64,
    /// Scores seen before any alert.
    pub min_samples: usize,
    /// Keep flagged scores out of the rolling window.
    pub exclude_anomalies: bool,
    /// Overrides the model's learned floor.
    pub threshold_floor: Option<f64>,
    /// Session grouping.
    pub session_key: SessionKey,
    /// Seconds (event time) after which an idle session ends.
    pub session_ttl_secs: i64,
    /// Most sessions tracked at once.
    pub max_sessions: usize,
    /// Anomalies of one template and reason within this many seconds are one alert.
    pub alert_group_secs: i64,
    /// What the alerts of new templates are grouped by.
    pub alert_grouping: AlertGrouping,
    /// Bounds of the online vocabulary.
    pub vocabulary: VocabularyLimits,
    /// Name of a field holding the event's level (decoded by a source), read before the line's
    /// own words; `None` reads the first of [`crate::severity::LEVEL_FIELDS`] the event has.
    pub level_field: Option<String>,
    /// The floor for the surprise of templates learned online (nats): a new template is
    /// alarming when this system's normal logs bring one as rarely as `e^-floor` per line.
    pub novelty_floor: f64,
    /// A line dated more than this many seconds after the time it is scored does not move the
    /// log clock (which ends idle sessions).
    pub max_clock_skew_secs: i64,
}

/// The default [`ScorerSettings::novelty_floor`]: one line in 200.
pub const NOVELTY_FLOOR: f64 = 5.298_317_366_548_036;

impl Default for ScorerSettings {
    /// The `deepsentry` transform's defaults, one session per stream.
    fn default() -> Self {
        Self {
            window_size: 100,
            threshold_multiplier: 2.5,
            min_samples: 20,
            exclude_anomalies: true,
            threshold_floor: None,
            session_key: SessionKey::Stream,
            session_ttl_secs: 3600,
            max_sessions: 100_000,
            alert_group_secs: 60,
            alert_grouping: AlertGrouping::Burst,
            vocabulary: VocabularyLimits::default(),
            level_field: None,
            novelty_floor: NOVELTY_FLOOR,
            max_clock_skew_secs: 300,
        }
    }
}

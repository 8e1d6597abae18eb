//! The fields the anomaly detector (the `deepsentry` transform) adds to every event it scores.
//! They are a contract between the detector, which writes them, and the encoders, sinks and
//! the `filter` transform, which read them: one list of names for both sides.

/// The event's anomaly score (float).
pub const ANOMALY_SCORE: &str = "anomaly_score";
/// The adaptive threshold the score was compared with (float).
pub const ANOMALY_THRESHOLD: &str = "anomaly_threshold";
/// Whether the score exceeded the threshold (bool).
pub const IS_ANOMALY: &str = "is_anomaly";
/// The session's recent messages, `a → b → c` (string).
pub const CONTEXT_WINDOW: &str = "context_window";
/// Why the event scored as it did: `new_template`, `rare_template`, `unlikely_next`,
/// `session_ended_early`, `broken_invariant` or `none` (string).
pub const ANOMALY_REASON: &str = "anomaly_reason";
/// The event's masked template (string).
pub const TEMPLATE: &str = "template";
/// For `unlikely_next`: the three most likely templates at that point, as
/// `[{"template": "...", "p": 0.42}, ...]` (JSON).
pub const EXPECTED: &str = "expected";
/// The first anomaly of its alert group (bool): what alert pipelines forward.
pub const ALERT: &str = "alert";
/// The id of an alert: on the group's first alert, and on every later member of its group.
pub const ALERT_GROUP: &str = "alert_group";
/// How many anomalies the event's alert group holds so far, this one included (int).
pub const ALERT_COUNT: &str = "alert_count";
/// The event's severity as the detector read it (`debug` .. `fatal`, string).
pub const SEVERITY: &str = "severity";
/// The session the event belongs to (string).
pub const SESSION: &str = "session";
/// Set on the event that marks a session's end (bool).
pub const SESSION_END: &str = "session_end";
/// On a session-end event whose template counts broke one of the model's invariants: the
/// broken relations in words (string).
pub const BROKEN_INVARIANT: &str = "broken_invariant";

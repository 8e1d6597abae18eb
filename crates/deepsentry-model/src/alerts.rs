//! Why an event scored as it did, and alert grouping: anomalies of the same key (the scorer's
//! choice: a template, or the severity and stream of a burst of new templates, see
//! [`crate::scorer::AlertGrouping`]) and reason within `alert_group_secs` of the group's first
//! one (in the events' own clock) are one alert. The first is the alert (`alert: true`); the later ones stay anomalies but carry the
//! group's id and running count, so a sink filtering on `alert` gets one message per distinct
//! anomaly and nothing is hidden from one that keeps every anomaly.

use std::collections::HashMap;
use std::sync::Arc;

/// What made an event's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing unusual.
    None,
    /// A template never seen in training, on one of its first occurrences.
    NewTemplate,
    /// A template learned online that is still rare.
    RareTemplate,
    /// A known template the sequence detector did not expect here.
    UnlikelyNext,
    /// A session that ended where normal sessions go on.
    SessionEndedEarly,
    /// A session whose template counts broke a relation every training session kept.
    BrokenInvariant,
}

impl Reason {
    /// The name written in `anomaly_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::NewTemplate => "new_template",
            Reason::RareTemplate => "rare_template",
            Reason::UnlikelyNext => "unlikely_next",
            Reason::SessionEndedEarly => "session_ended_early",
            Reason::BrokenInvariant => "broken_invariant",
        }
    }
}

struct Group {
    id: Arc<str>,
    first: i64,
    count: u64,
}

/// An anomaly's place in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMark {
    /// Whether this anomaly is the group's first (the one to send).
    pub alert: bool,
    /// The group's id (the first anomaly's).
    pub group: Arc<str>,
    /// Anomalies in the group so far, this one included.
    pub count: u64,
}

/// The open alert groups.
pub struct AlertGroups {
    window_secs: i64,
    groups: HashMap<(Arc<str>, Reason), Group>,
    grouped: u64,
}

/// Open groups kept before the expired ones are dropped.
const PRUNE_AT: usize = 4096;

fn group_id(key: &str, reason: Reason, at: i64) -> String {
    let hash = deepsentry_core::hash::Fnv1a::with_seed(0)
        .write(key.as_bytes())
        .write(reason.as_str().as_bytes())
        .finish();
    format!("{hash:016x}-{at}")
}

impl AlertGroups {
    /// Groups spanning `window_secs` from their first anomaly (0: every anomaly an alert).
    pub fn new(window_secs: i64) -> Self {
        Self {
            window_secs: window_secs.max(0),
            groups: HashMap::new(),
            grouped: 0,
        }
    }

    /// Anomalies that joined an existing group (not sent as alerts of their own).
    pub fn grouped(&self) -> u64 {
        self.grouped
    }

    /// Places an anomaly grouped by `key` (its template, or what else the scorer groups by)
    /// for `reason` at `at` (seconds, the events' clock).
    pub fn mark(&mut self, key: &Arc<str>, reason: Reason, at: i64) -> AlertMark {
        if self.groups.len() >= PRUNE_AT {
            let window = self.window_secs;
            self.groups
                .retain(|_, g| at.saturating_sub(g.first) <= window);
        }
        let group_key = (key.clone(), reason);
        if let Some(group) = self.groups.get_mut(&group_key) {
            // An event older than the group's first (lines out of order) still belongs to it.
            if at.saturating_sub(group.first) <= self.window_secs {
                group.count += 1;
                self.grouped += 1;
                return AlertMark {
                    alert: false,
                    group: group.id.clone(),
                    count: group.count,
                };
            }
        }
        let id: Arc<str> = group_id(key, reason, at).into();
        self.groups.insert(
            group_key,
            Group {
                id: id.clone(),
                first: at,
                count: 1,
            },
        );
        AlertMark {
            alert: true,
            group: id,
            count: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_template_and_reason_within_the_window_is_one_alert() {
        let mut groups = AlertGroups::new(60);
        let a: Arc<str> = "disk <NUM> failed".into();
        let b: Arc<str> = "fan stopped".into();
        let first = groups.mark(&a, Reason::NewTemplate, 1000);
        assert!(first.alert);
        let second = groups.mark(&a, Reason::NewTemplate, 1030);
        assert_eq!(
            (second.alert, second.count, &second.group),
            (false, 2, &first.group)
        );
        // Another reason or template is another alert.
        assert!(groups.mark(&a, Reason::RareTemplate, 1031).alert);
        assert!(groups.mark(&b, Reason::NewTemplate, 1032).alert);
        // Past the window from the group's first anomaly: a new group.
        let later = groups.mark(&a, Reason::NewTemplate, 1061);
        assert!(later.alert);
        assert_ne!(later.group, first.group);
        assert_eq!(groups.grouped(), 1);
    }

    #[test]
    fn a_zero_window_makes_every_anomaly_an_alert_at_a_new_time() {
        let mut groups = AlertGroups::new(0);
        let a: Arc<str> = "x".into();
        assert!(groups.mark(&a, Reason::UnlikelyNext, 5).alert);
        assert!(!groups.mark(&a, Reason::UnlikelyNext, 5).alert);
        assert!(groups.mark(&a, Reason::UnlikelyNext, 6).alert);
    }

    #[test]
    fn expired_groups_are_dropped() {
        let mut groups = AlertGroups::new(10);
        for i in 0..(PRUNE_AT as i64 * 2) {
            let t: Arc<str> = format!("t{i}").into();
            groups.mark(&t, Reason::NewTemplate, i * 100);
        }
        assert!(groups.groups.len() <= PRUNE_AT);
    }
}

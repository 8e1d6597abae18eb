//! Scoring a batch: every event's score, reason and verdict, and the fields it leaves with.

use std::ops::Deref;
use std::sync::Arc;

use deepsentry_core::anomaly;
use deepsentry_core::{Event, Value};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::{
    AlertGrouping, Kind, Pending, Scorer, SequenceModel, Window, END_OF_SESSION,
    LEARNING_OCCURRENCES, MAX_CACHED_WINDOWS, MAX_SURPRISE,
};
use crate::alerts::Reason;
use crate::novelty::{Followers, Next};
use crate::severity::Severity;

/// Weight, in occurrences, of the probability an event had before anything was counted after
/// the template learned online that precedes it: what follows a new template is learned over
/// as many occurrences as the template itself.
const FOLLOWER_PRIOR: f64 = LEARNING_OCCURRENCES as f64;

/// `log_p`, the log-probability of an event without online counts, updated by what came after
/// the template learned online before it (`followed`: how often this event's template came
/// after it, and how often anything did): the log of the mean of a Dirichlet posterior whose
/// prior is `e^log_p` with the weight of [`FOLLOWER_PRIOR`] occurrences. With nothing counted
/// it is `log_p`; with many, the log of the observed share.
fn followed(log_p: f64, followed: Option<(u32, u32)>) -> f64 {
    match followed {
        None => log_p,
        Some((count, total)) => ((f64::from(count) + FOLLOWER_PRIOR * log_p.exp())
            / (f64::from(total) + FOLLOWER_PRIOR))
            .ln(),
    }
}

impl<M: Deref> Scorer<M>
where
    M::Target: SequenceModel,
{
    /// The three classes most likely for an event, as `expected`: the detector's view,
    /// updated by `followers`, what had come after the template learned online before it
    /// where that was counted (as its score is).
    pub(super) fn expected(&self, followers: Option<&Followers>, log_probs: &[f32]) -> Value {
        let templates = self.model.templates();
        let end = self.model.end_class();
        // Counts of what came after the previous template, by class, before this event.
        let mut counts: HashMap<usize, u32> = HashMap::new();
        let total = followers.map_or(0, Followers::total);
        for (next, count) in followers.into_iter().flat_map(Followers::counts) {
            let class = match next {
                Next::End => Some(end),
                Next::Template(text) => self.vocabulary.get(text).and_then(|(t, _)| t.class),
            };
            if let Some(class) = class {
                *counts.entry(class).or_default() += count;
            }
        }
        let mut ranked: Vec<(usize, f32)> = log_probs
            .iter()
            .enumerate()
            .filter(|&(class, _)| class < templates.len() || class == end)
            .map(|(class, &log_p)| {
                let log_p = f64::from(self.model.mixed(class, log_p));
                let counted = followers
                    .is_some()
                    .then(|| (counts.get(&class).copied().unwrap_or(0), total));
                (class, followed(log_p, counted) as f32)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list = ranked
            .into_iter()
            .take(3)
            .map(|(class, log_p)| {
                let name = templates.get(class).map_or(END_OF_SESSION, String::as_str);
                let p = (f64::from(log_p).exp() * 1000.0).round() / 1000.0;
                serde_json::json!({ "template": name, "p": p })
            })
            .collect();
        Value::Json(serde_json::Value::Array(list))
    }

    /// The score and reason of an event whose window's probabilities are known.
    pub(super) fn score_of(&self, p: &Pending, log_probs: Option<&[f32]>) -> (f64, Reason) {
        let surprise = |class: usize| {
            log_probs.map_or(MAX_SURPRISE, |lp| {
                let log_p = f64::from(self.model.mixed(class, lp[class]));
                (-followed(log_p, p.followed)).clamp(0.0, MAX_SURPRISE)
            })
        };
        let novelty = self.novelty();
        match &p.kind {
            Kind::Known(class) if p.split_start && !self.model.judges_session_ends() => {
                // A model of one stream split by a key found in it does not know where its
                // sessions begin: the first line met of a thread or a request (or of the lines
                // the key does not match) may be the middle of one that began before the
                // scorer, or the log, did. It is as surprising as its template is rare, and no
                // more than the detector makes it.
                let rarity = self
                    .model
                    .prior(*class)
                    .map_or(MAX_SURPRISE, |p| -f64::from(p.max(f32::MIN_POSITIVE)).ln());
                (surprise(*class).min(rarity), Reason::UnlikelyNext)
            }
            Kind::Known(class) => (surprise(*class), Reason::UnlikelyNext),
            Kind::End if !p.broken.is_empty() => {
                // No training session ended like this: as surprising as an event can be.
                (MAX_SURPRISE, Reason::BrokenInvariant)
            }
            Kind::End if !self.model.judges_session_ends() => (0.0, Reason::None),
            Kind::End => (surprise(self.model.end_class()), Reason::SessionEndedEarly),
            Kind::Online(before) => {
                let new = novelty.new_template_surprise(p.severity).min(MAX_SURPRISE);
                // Rarity: how often it came since it first did (this occurrence excluded).
                let rarity = if before.count == 0 {
                    0.0
                } else {
                    let span = p.line.saturating_sub(before.first_seen).max(1) as f64;
                    (span / before.count as f64).ln().clamp(0.0, MAX_SURPRISE)
                };
                if before.count < LEARNING_OCCURRENCES {
                    (new.max(rarity), Reason::NewTemplate)
                } else {
                    // Once learned, after a template learned online it is as likely as it
                    // came after that one.
                    let rarity = (-followed(-rarity, p.followed)).max(0.0);
                    let score = rarity + novelty.lasting_novelty(p.severity);
                    (score.min(MAX_SURPRISE), Reason::RareTemplate)
                }
            }
        }
    }

    pub(super) fn score(&mut self, pending: Vec<Pending>) -> Vec<Event> {
        if self.windows.len() > MAX_CACHED_WINDOWS {
            self.windows.clear();
        }
        // Distinct windows not in the cache, scored in one batch. Events of online templates
        // need none unless they end a session.
        let mut missing: Vec<(&[u64], &Window)> = Vec::new();
        let mut seen = HashSet::new();
        for p in &pending {
            if matches!(p.kind, Kind::Online(_)) {
                continue;
            }
            let key = &*p.window_key;
            if !self.windows.contains_key(key) && seen.insert(key) {
                missing.push((key, &p.window));
            }
        }
        if !missing.is_empty() {
            let inputs: Vec<Vec<&[f32]>> = missing
                .iter()
                .map(|(_, w)| w.iter().map(|t| t.vector.as_slice()).collect())
                .collect();
            let outputs = self.model.log_probs(&inputs);
            self.stats.detector_windows += missing.len() as u64;
            for ((key, _), log_probs) in missing.into_iter().zip(outputs) {
                self.windows.insert(key.into(), log_probs.into());
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            let log_probs = match p.kind {
                Kind::Online(_) => None,
                _ => self.windows.get(&*p.window_key).cloned(),
            };
            let (score, reason) = self.score_of(&p, log_probs.as_deref());
            // A certain event scores `-ln 1`, which is -0.0: shown as 0.
            let score = score + 0.0;
            // A template's novelty is a probability learned from counts, not the detector's
            // output: it has its own floor.
            let verdict = match reason {
                Reason::NewTemplate | Reason::RareTemplate => self
                    .threshold
                    .observe_above(score, self.settings.novelty_floor),
                _ => self.threshold.observe(score),
            };
            self.stats.scored += 1;
            let reason = if verdict.is_anomaly {
                reason
            } else {
                Reason::None
            };
            let followers_before = p.followers_before;
            let mut event = p.event;
            let fields = &mut event.fields;
            // The fields below, in one allocation.
            fields.reserve(12);
            fields.insert(anomaly::SESSION, Value::Str(p.session.to_string()));
            fields.insert(anomaly::ANOMALY_SCORE, Value::Float(score));
            fields.insert(anomaly::ANOMALY_THRESHOLD, Value::Float(verdict.threshold));
            fields.insert(anomaly::IS_ANOMALY, Value::Bool(verdict.is_anomaly));
            fields.insert(anomaly::ANOMALY_REASON, Value::Str(reason.as_str().into()));
            fields.insert(anomaly::TEMPLATE, Value::Str(p.template.to_string()));
            if p.severity >= Severity::Warn {
                fields.insert(anomaly::SEVERITY, Value::Str(p.severity.name().into()));
            }
            if verdict.is_anomaly {
                self.stats.anomalies += 1;
                if reason == Reason::UnlikelyNext {
                    if let Some(log_probs) = &log_probs {
                        let expected = self.expected(followers_before.as_deref(), log_probs);
                        fields.insert(anomaly::EXPECTED, expected);
                    }
                }
                let burst;
                let key = match (reason, self.settings.alert_grouping) {
                    (Reason::NewTemplate, AlertGrouping::Burst) => {
                        burst = Arc::from(format!(
                            "new {} templates in {}",
                            p.severity.name(),
                            event.origin.stream
                        ));
                        &burst
                    }
                    _ => &p.alert_key,
                };
                let mark = self.alerts.mark(key, reason, p.at);
                self.stats.alerts += u64::from(mark.alert);
                fields.insert(anomaly::ALERT, Value::Bool(mark.alert));
                fields.insert(anomaly::ALERT_GROUP, Value::Str(mark.group.to_string()));
                fields.insert(anomaly::ALERT_COUNT, Value::Int(mark.count as i64));
            } else {
                fields.insert(anomaly::ALERT, Value::Bool(false));
            }
            fields.insert(anomaly::CONTEXT_WINDOW, Value::Str(p.context));
            if !p.broken.is_empty() {
                fields.insert(anomaly::BROKEN_INVARIANT, Value::Str(p.broken.join("; ")));
            }
            out.push(event);
        }
        out
    }
}
